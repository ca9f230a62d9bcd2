"""The saga's end, recorded once on the window: complete (confirmed routes, parcels re-queued for
the next window) or fail (why, after compensation). The first recorded outcome stands, so a late
``complete`` after ``fail`` answers FAILED."""

from __future__ import annotations

from typing import Any

from meridian.app import dispatch_records as rec
from meridian.domain import events as ev
from meridian.domain.dispatch import CompleteDispatch, FailDispatch
from meridian.domain.errors import NotFound
from meridian.domain.events import derive_event_id
from meridian.domain.model import DispatchWindowStatus
from meridian.ports import Query, Transaction
from services.dispatch.handlers import Answer, Deps


def complete(command: CompleteDispatch, deps: Deps) -> Answer:
    """The saga's happy end: confirmed routes and the parcels re-queued for the next window."""
    window_id = command.window_id
    confirmed = sorted(
        d.id
        for d in deps.store.query(Query(rec.ROUTES).where("window_id", "==", window_id))
        if d.data["status"] == "CONFIRMED"
    )
    window = _finish(
        deps, window_id, DispatchWindowStatus.DISPATCHED, {"routes_confirmed": confirmed}
    )
    requeued = sorted(window.get("requeued", []))
    confirmed = list(window["outcome"].get("routes_confirmed", confirmed))
    event = ev.DispatchCompleted(
        event_id=derive_event_id("DispatchCompleted", window_id),
        occurred_at=window["outcome"]["at"],
        window_id=window_id,
        execution_id=command.execution_id,
        routes_confirmed=tuple(confirmed),
        parcels_requeued=tuple(requeued),
    )
    result = {
        "window_id": window_id,
        "status": window["status"],
        "routes_confirmed": confirmed,
        "parcels_requeued": len(requeued),
    }
    return result, [event]


def fail(command: FailDispatch, deps: Deps) -> Answer:
    """The saga failed and compensated: record why, with the parcels it gave back."""
    window_id = command.window_id
    reason = (command.reason or "dispatch failed")[:500]
    window = _finish(deps, window_id, DispatchWindowStatus.FAILED, {"reason": reason})
    requeued = sorted(window.get("requeued", []))
    event = ev.DispatchFailed(
        event_id=derive_event_id("DispatchFailed", window_id),
        occurred_at=window["outcome"]["at"],
        window_id=window_id,
        execution_id=command.execution_id,
        reason=window["outcome"].get("reason", reason),
        parcels_requeued=tuple(requeued),
    )
    return {
        "window_id": window_id,
        "status": window["status"],
        "parcels_requeued": len(requeued),
    }, [event]


def _finish(
    deps: Deps, window_id: str, status: DispatchWindowStatus, outcome: dict[str, Any]
) -> dict[str, Any]:
    now = deps.clock()

    def work(tx: Transaction) -> dict[str, Any]:
        doc = tx.get(rec.window_path(window_id))
        if doc is None:
            raise NotFound(f"no dispatch window {window_id}")
        if doc.data.get("outcome"):
            return dict(doc.data)  # the first recorded outcome stands
        data = {
            **doc.data,
            "status": status.value,
            "outcome": {**outcome, "at": now},
            "updated_at": now,
        }
        data["progress"] = {**doc.data.get("progress", {}), "stage": status.value}
        tx.set(rec.window_path(window_id), data)
        return data

    return deps.store.run_transaction(work)
