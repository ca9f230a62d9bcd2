"""The dispatch saga's steps, one function each, called by ``workflows/dispatch.yaml`` over HTTP.

Each step takes its typed command (``meridian/domain/dispatch.py``) and the ports below, and
answers with its result and the events to publish; ``services/dispatch/steps.py`` runs it under the
workflow's idempotency key in the one request ledger (``meridian/app/idempotency.py``), so a
retried call gets the first answer back. The steps, by what they do to a window:

- ``planning``: reserve (parcels planned, drivers and vehicles held), optimize, assign;
- ``offers``: offer one route, or the first offer of every route at once;
- ``answers``: the driver's answer (confirm, decline or expired);
- ``compensation``: release routes, drivers and vehicles, requeue parcels;
- ``outcome``: the saga's end (complete, fail), once;
- ``holdings``: the reads and moves several steps share.

Every step is idempotent by construction (re-running it after it succeeded finds its work done,
changes nothing and answers the same). Steps that touch many parcels commit in chunks below
Firestore's 500 writes per transaction; a retry after a crash between chunks simply finishes the
rest. Events are published after the commit with ids derived from what they describe, so a step
re-run after a failed publish republishes the same event ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meridian.codec.events import EventCodec
from meridian.domain.actors import Actor
from meridian.domain.events import DomainEvent
from meridian.ports import DocumentStore, Publisher, RouteOptimizer
from services.dispatch.ledger import LedgerWriter

CHUNK = 200  # documents per transaction, well under Firestore's 500 writes
SAGA = Actor(subject="dispatch-saga", role="dispatcher")
Events = list[DomainEvent]
Answer = tuple[dict[str, Any], Events]  # a step's result and the events it announces


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    publisher: Publisher
    codec: EventCodec
    optimizer: RouteOptimizer
    clock: Callable[[], datetime]
    ledger: LedgerWriter | None = None  # None: each ledger entry is created on its own
