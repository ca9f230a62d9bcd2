"""Idempotency ledgers, written in the same transaction as the effect they guard.

Two shapes, one mechanism:

- **Requests** (the command path, and the dispatch saga's steps): a client's ``Idempotency-Key``
  names the request; the first response is stored with a fingerprint of the request, a retry with
  the same key and body gets that response back and writes nothing, the same key with another body
  is refused. A saga step spans several transactions, so it reads the ledger from the store before
  it starts and writes its entry (``request_entry``) once it is done; its effects are idempotent by
  construction, so a crash in between only runs it again.
- **Events** (reactors): the event id names the delivery; a redelivered event finds its id in
  ``processed_events`` and is acknowledged without a second effect.

Both ledgers carry ``expire_at`` for the store's TTL policy, so they stay small.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from meridian.domain.errors import IdempotencyMismatch
from meridian.ports import DocumentStore, Transaction

REQUEST_LEDGER = "idempotency_keys"
EVENT_LEDGER = "processed_events"
EXPIRY_FIELD = "expire_at"
REQUEST_TTL = timedelta(hours=24)
EVENT_TTL = timedelta(
    days=8
)  # longer than Pub/Sub's 7-day retention: a replay is still a duplicate


def _digest(*parts: str | bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else part.encode())
        hasher.update(b"\x1f")
    return hasher.hexdigest()


@dataclass(frozen=True)
class RequestKey:
    """One client request: who sent it (``scope``), their key, and a fingerprint of what they sent."""

    scope: str
    key: str
    fingerprint: str

    @classmethod
    def of(cls, scope: str, key: str, method: str, path: str, body: bytes) -> RequestKey:
        return cls(scope=scope, key=key, fingerprint=_digest(method.upper(), path, body))

    @cached_property  # read for the replay check and again for the record: hash once
    def path(self) -> str:
        return f"{REQUEST_LEDGER}/{_digest(self.scope, self.key)[:40]}"


def replayed_response(
    reader: Transaction | DocumentStore, request: RequestKey | None
) -> dict[str, Any] | None:
    """The stored response if this request was already answered; raises IdempotencyMismatch if
    the key was used for a different request. In a transaction, call before any write of it."""
    if request is None:
        return None
    entry = reader.get(request.path)
    if entry is None:
        return None
    if entry.data["fingerprint"] != request.fingerprint:
        raise IdempotencyMismatch(
            f"Idempotency-Key {request.key!r} was already used for a different request; "
            "use a new key for a new request"
        )
    body: dict[str, Any] = dict(entry.data["response"])
    return body


def record_response(
    tx: Transaction, request: RequestKey | None, response: Mapping[str, Any], now: datetime
) -> None:
    if request is None:
        return
    tx.create(request.path, request_entry(request, response, now))


def request_entry(
    request: RequestKey, response: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The ledger entry that answers ``request`` with ``response`` from now on, at ``request.path``."""
    return {
        "scope": request.scope,
        "key": request.key,
        "fingerprint": request.fingerprint,
        "response": dict(response),
        "created_at": now,
        EXPIRY_FIELD: now + REQUEST_TTL,
    }


def event_ledger_path(consumer: str, event_id: str) -> str:
    return f"{EVENT_LEDGER}/{consumer}:{event_id}"


def already_processed(tx: Transaction, consumer: str, event_id: str) -> bool:
    return tx.get(event_ledger_path(consumer, event_id)) is not None


def mark_processed(tx: Transaction, consumer: str, event_id: str, now: datetime) -> None:
    tx.create(
        event_ledger_path(consumer, event_id),
        {
            "consumer": consumer,
            "event_id": event_id,
            "processed_at": now,
            EXPIRY_FIELD: now + EVENT_TTL,
        },
    )
