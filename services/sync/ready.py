"""The ``sync-ready`` job: is what a request applied visible in Meridian yet?

The sync workflow polls it between applying and reconciling (``workflows/sync.yaml``, with a
timeout, never a blind sleep). Ready means every row of the request, as the monolith has it now,
is linked in Meridian at that version (``sync_links``: the bridge applied it, or resolved a
conflict over it): a concurrent apply of an overlapping request (the scheduled and the on-demand
path, a retried job) has committed. A row changed in the monolith after the request's upper
bound belongs to the next request and is not waited for. Exit 0 when ready; ``NOT_READY`` (75,
EX_TEMPFAIL) naming a few pending ids otherwise.

Not checked (yet): that Meridian's event plane has published what was applied (Eventarc's
delivery of the committed changes); the reconcile job compares the stores themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.events import SyncRequested
from meridian.observability import get_logger
from meridian.ports import DocumentStore
from services.sync import legacy
from services.sync.apply import read_rows
from services.sync.entities import Entity, entity
from services.sync.envelope import decode_argument

log = get_logger(__name__)
NOT_READY = 75


def pending(
    store: DocumentStore,
    conn: Connection[dict[str, Any]],
    target: Entity,
    request: SyncRequested,
    page_size: int,
) -> list[str]:
    """The ids of the request's rows not yet linked in Meridian at their current version."""
    waiting: list[str] = []
    for rows in read_rows(conn, target, request, page_size):
        for row in rows:
            after = request.through_updated_at
            if after is not None and not request.ids and row["updated_at"] > after:
                continue  # changed since: the next request's
            link = store.get(target.link_path(row["id"]))
            if link is None or int(link.data.get("legacy_version", -1)) < int(row["version"]):
                waiting.append(str(row["id"]))
    return waiting


def _named(ids: Sequence[str]) -> str:
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def sync_ready(argument: str, settings: Settings) -> int:
    """Job entry point (``meridian job run sync-ready ARGUMENT``)."""
    request = decode_argument(argument, EventCodec(load_catalog()))
    target = entity(request.entity)
    store = adapters.document_store(settings, service=target.job)
    with legacy.connect(settings, autocommit=True) as conn:
        waiting = pending(store, conn, target, request, settings.legacy.page_size)
    if waiting:
        print(f"not ready: {len(waiting)} row(s) not yet in Meridian: {_named(waiting)}")
        return NOT_READY
    log.info("ready", request=request.request_id, entity=target.name)
    return 0
