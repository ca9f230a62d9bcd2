"""Client webhooks: each event becomes one delivery per matching endpoint of its client, and a
worker sends due deliveries, signed per Standard Webhooks, on the retry schedule.

Enqueueing (the delivery records and the processed-event entry, one transaction) is what the push
answer waits for; sending is the worker's, so a slow or dead client endpoint never holds back the
subscription. Deliveries have deterministic paths (endpoint, event), so an event is delivered once
per endpoint however often it is pushed; ``webhook-id`` is the event id on every attempt. Each
attempt is counted (``meridian.metrics``) once its outcome is recorded: ``webhook_sent`` for a 2xx,
``webhook_failed`` for any other answer or none (retried or given up).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meridian import metrics
from meridian.app.idempotency import already_processed, mark_processed
from meridian.app.webhooks import (
    DELIVERIES,
    ENDPOINTS,
    WebhookPolicy,
    check_destination,
    next_attempt,
    retry_delay_s,
    signed_headers,
)
from meridian.domain.errors import MeridianError, Unavailable
from meridian.domain.events import DomainEvent
from meridian.ports import Document, DocumentStore, Query, Transaction, WebhookSender

CONSUMER = "client-webhook"
SEND_TIMEOUT_S = 10.0
LEASE = timedelta(seconds=SEND_TIMEOUT_S + 30)  # a crashed sender's claim expires after this


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    sender: WebhookSender
    policy: WebhookPolicy  # where endpoints may point (bootstrap: https only on gcp)
    clock: Callable[[], datetime]


def payload(event: DomainEvent) -> bytes:
    body = {
        "type": event.event_type,
        "timestamp": event.occurred_at.isoformat(),
        "data": event.model_dump(mode="json"),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def enqueue(event: DomainEvent, deps: Deps) -> list[str]:
    """Record one pending delivery per active endpoint of the event's client that wants it."""
    return enqueue_batch([event], deps)[0]


def enqueue_batch(events: Sequence[DomainEvent], deps: Deps) -> list[list[str]]:
    """``enqueue`` for the events pushed together, in one transaction (each client's endpoints
    read once); per event, the paths of the deliveries it enqueued."""
    return _enqueue(events, deps, claim=False)[0]


def enqueue_claimed(
    events: Sequence[DomainEvent], deps: Deps
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """``enqueue_batch`` whose deliveries are claimed for their first attempt in the same
    transaction, for the caller to send now: a claim of its own was a second transaction (and
    a read of each delivery and endpoint) per delivery. The claims, as ``claim_paths`` gives."""
    return _enqueue(events, deps, claim=True)


def _enqueue(
    events: Sequence[DomainEvent], deps: Deps, claim: bool
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    now = deps.clock()

    def record(tx: Transaction) -> tuple[list[list[str]], list[dict[str, Any]]]:
        # Every read of the transaction before its first write, as Firestore requires.
        fresh: dict[str, DomainEvent] = {}
        for event in events:
            if event.event_id not in fresh and not already_processed(tx, CONSUMER, event.event_id):
                fresh[event.event_id] = event
        clients: set[str] = {c for e in fresh.values() if (c := _client_of(e)) is not None}
        endpoints = {
            client_id: tx.query(Query(ENDPOINTS).where("client_id", "==", client_id))
            for client_id in sorted(clients)
        }
        enqueued: dict[str, list[str]] = {}
        claimed: list[dict[str, Any]] = []
        for event_id, event in fresh.items():
            client_id = _client_of(event)
            enqueued[event_id] = []
            for endpoint in endpoints.get(client_id, []) if client_id is not None else []:
                delivery = _deliver_to(tx, endpoint, event, endpoint.data["client_id"], now, claim)
                if delivery is not None:
                    enqueued[event_id].append(delivery["path"])
                    claimed += [delivery] if claim else []
            mark_processed(tx, CONSUMER, event_id, now)
        # A repeat of an event within the batch enqueued nothing of its own.
        return [enqueued.pop(e.event_id, []) for e in events], claimed

    return deps.store.run_transaction(record)


def _client_of(event: DomainEvent) -> str | None:
    """The client whose endpoints an event goes to (events without one go to nobody)."""
    client_id = getattr(event, "client_id", None)
    return client_id if isinstance(client_id, str) else None


def _deliver_to(
    tx: Transaction,
    endpoint: Document,
    event: DomainEvent,
    client_id: str,
    now: datetime,
    claim: bool,
) -> dict[str, Any] | None:
    """Record the delivery; what ``_take`` gives for it (claimed or not)."""
    wanted = endpoint.data.get("event_types") or []
    if endpoint.data["status"] != "active" or (wanted and event.event_type not in wanted):
        return None
    path = f"{DELIVERIES}/{endpoint.id}:{event.event_id}"
    delivery: dict[str, Any] = {
        "webhook_id": endpoint.id,
        "client_id": client_id,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "body": payload(event).decode(),
        "status": "pending",
        "attempts": 1 if claim else 0,
        "next_attempt_at": now + LEASE if claim else now,
        "created_at": now,
        "log": [],
    }
    tx.set(path, delivery)
    return {**delivery, "path": path, "endpoint": dict(endpoint.data)}


def due(deps: Deps, limit: int = 50) -> list[str]:
    now = deps.clock()
    pending = deps.store.query(
        Query(DELIVERIES).where("status", "==", "pending").order_by("next_attempt_at").limit(limit)
    )
    return [d.path for d in pending if d.data["next_attempt_at"] <= now]


def _claim(path: str, deps: Deps) -> dict[str, Any] | None:
    """Take the delivery for one attempt (a lease, so two workers do not send it at once)."""
    now = deps.clock()

    def claim(tx: Transaction) -> dict[str, Any] | None:
        delivery = tx.get(path)
        if delivery is None:
            return None
        endpoint = tx.get(f"{ENDPOINTS}/{delivery.data['webhook_id']}")
        return _take(tx, delivery, endpoint, now)

    return deps.store.run_transaction(claim)


def claim_due(deps: Deps, limit: int) -> list[dict[str, Any]]:
    """Take up to ``limit`` due deliveries for one attempt each, in one transaction: a claim per
    delivery was a transaction per delivery, and the listing of due ones another read of them."""
    now = deps.clock()

    def claim(tx: Transaction) -> list[dict[str, Any]]:
        pending = tx.query(
            Query(DELIVERIES)
            .where("status", "==", "pending")
            .order_by("next_attempt_at")
            .limit(limit)
        )
        return _take_all(tx, [d for d in pending if d.data["next_attempt_at"] <= now], now)

    return deps.store.run_transaction(claim)


def claim_paths(deps: Deps, paths: Sequence[str]) -> list[dict[str, Any]]:
    """``claim_due`` for the deliveries at ``paths`` (those due of them), by point reads."""
    now = deps.clock()

    def claim(tx: Transaction) -> list[dict[str, Any]]:
        found = [d for d in (tx.get(p) for p in dict.fromkeys(paths)) if d is not None]
        return _take_all(tx, found, now)

    return deps.store.run_transaction(claim)


def _take_all(
    tx: Transaction, deliveries: Sequence[Document], now: datetime
) -> list[dict[str, Any]]:
    """``_take`` each delivery, reading each endpoint once (all reads before the first write)."""
    endpoints = {
        webhook_id: tx.get(f"{ENDPOINTS}/{webhook_id}")
        for webhook_id in sorted({d.data["webhook_id"] for d in deliveries})
    }
    taken = [_take(tx, d, endpoints[d.data["webhook_id"]], now) for d in deliveries]
    return [t for t in taken if t is not None]


def _take(
    tx: Transaction, delivery: Document, endpoint: Document | None, now: datetime
) -> dict[str, Any] | None:
    if delivery.data["status"] != "pending" or delivery.data["next_attempt_at"] > now:
        return None
    if endpoint is None or endpoint.data["status"] != "active":
        tx.update(delivery.path, {"status": "failed", "last_error": "endpoint deleted or disabled"})
        return None
    attempts = delivery.data["attempts"] + 1
    tx.update(delivery.path, {"next_attempt_at": now + LEASE, "attempts": attempts})
    return {
        **delivery.data,
        "path": delivery.path,
        "attempts": attempts,
        "endpoint": dict(endpoint.data),
    }


def attempt(path: str, deps: Deps) -> str:
    """One attempt at a due delivery; records the outcome and the next attempt (or gives up)."""
    claimed = _claim(path, deps)
    if claimed is None:
        return "not due"
    return send_claimed(claimed, deps)


def send_claimed(claimed: dict[str, Any], deps: Deps) -> str:
    """Send a claimed delivery; records the outcome and the next attempt (or gives up), then
    counts the attempt, sent or failed."""
    outcome, record = send_only(claimed, deps)
    deps.store.run_transaction(record)
    if outcome == "delivered":
        metrics.webhook_sent()
    else:
        metrics.webhook_failed()
    return outcome


def send_only(claimed: dict[str, Any], deps: Deps) -> tuple[str, Callable[[Transaction], None]]:
    """Send a claimed delivery; the outcome, and the transaction that records it and the next
    attempt (or gives up), for the caller to commit, alone or with others', and then to count
    (``send_claimed`` does both)."""
    path = claimed["path"]
    endpoint, body = claimed["endpoint"], claimed["body"].encode()
    started = deps.clock()
    status: int | None = None
    retry_after: str | None = None
    try:
        # DNS, the policy or the URL rules may have changed since the endpoint was registered.
        check_destination(endpoint["url"], deps.policy)
        headers = signed_headers(endpoint["secret"], claimed["event_id"], body, started)
        response = deps.sender.send(endpoint["url"], headers, body, SEND_TIMEOUT_S)
        status, error = response.status, None
        retry_after = {k.lower(): v for k, v in response.headers.items()}.get("retry-after")
    except Unavailable as e:
        error = str(e)
    except MeridianError as e:  # refused destination or URL: no retry until the endpoint changes
        error = str(e)
        status = 0
    finished = deps.clock()
    entry = {
        "at": started,
        "status": status,
        "error": error,
        "ms": round((finished - started).total_seconds() * 1000),
    }
    update: dict[str, Any] = {"log": [*claimed.get("log", []), entry][-20:], "last_status": status}
    disable: str | None = None
    if status is not None and 200 <= status < 300:
        update.update(status="delivered", delivered_at=finished)
    elif status in (410, 0):
        update["status"] = "failed"
        disable = "endpoint answered 410 Gone" if status == 410 else f"destination refused: {error}"
    else:
        delay = retry_delay_s(claimed["attempts"], retry_after)
        if delay is None:
            update["status"] = "failed"
            disable = f"retry schedule exhausted after {claimed['attempts']} attempts"
        else:
            update["next_attempt_at"] = next_attempt(finished, delay)

    def record(tx: Transaction) -> None:
        tx.update(path, update)
        if disable:
            tx.update(
                f"{ENDPOINTS}/{claimed['webhook_id']}",
                {"status": "disabled", "disabled_reason": disable},
            )

    return str(update.get("status", "retry scheduled")), record
