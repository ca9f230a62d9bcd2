"""The dispatch desk's and drivers' use cases on the command side: open a window (which starts the
saga; by hand, or when a dispatch schedule makes it due, ``handlers/schedules.py``), follow it,
and answer a route offer (which sends the saga its callback).

The saga itself runs in the workflow engine and ``services/dispatch``; these handlers only write
the window, start the execution through the WorkflowExecutions port and relay answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from meridian.app import dispatch_records as rec
from meridian.app.idempotency import RequestKey, record_response, replayed_response
from meridian.domain.actors import Actor
from meridian.domain.errors import Conflict, NotFound, PermissionDenied, Unavailable
from meridian.domain.events import DispatchWindowOpened, derive_event_id
from meridian.domain.model import DispatchWindow, GeoPoint, TimeWindow
from meridian.ports import Transaction, WorkflowExecutions
from services.command.handlers import Deps

Decision = Literal["accept", "decline"]


@dataclass(frozen=True)
class OpenWindow:
    depot: GeoPoint
    window: TimeWindow
    window_id: str | None = None
    max_offers: int = 3
    offer_timeout_s: float = 900.0
    solve_time_limit_s: float = 10.0
    schedule_id: str | None = None  # the dispatch schedule opening it (handlers/schedules.py)


def open_window(
    cmd: OpenWindow,
    actor: Actor,
    deps: Deps,
    workflows: WorkflowExecutions,
    request: RequestKey | None,
) -> dict[str, Any]:
    """Write the window once, then start its saga. The execution id derives from the window id,
    so opening the same window again (or retrying after a failed start) reaches one execution."""
    actor.require("dispatcher")
    now = deps.clock()
    window_id = cmd.window_id or f"w-{uuid.uuid4().hex[:12]}"
    execution = rec.execution_id(window_id)

    def work(tx: Transaction) -> dict[str, Any]:
        if (replay := replayed_response(tx, request)) is not None:
            return replay
        if tx.get(rec.window_path(window_id)) is None:
            window = DispatchWindow(
                window_id=window_id,
                depot=cmd.depot,
                window=cmd.window,
                opened_by=actor.subject,
                execution_id=execution,
                schedule_id=cmd.schedule_id,
            )
            tx.create(rec.window_path(window_id), rec.window_document(window, now))
        response = {
            "window_id": window_id,
            "execution_id": execution,
            "status_url": f"/v1/dispatch-windows/{window_id}",
            "accepted_at": now.isoformat(),
        }
        record_response(tx, request, response, now)
        return response

    response = deps.store.run_transaction(work)
    window = deps.store.get(rec.window_path(response["window_id"]))
    assert window is not None
    # the saga's arguments are those of the first request: a repeat starts nothing new
    stored = window.data
    argument = {
        "window_id": response["window_id"],
        "max_offers": cmd.max_offers,
        "offer_timeout_s": cmd.offer_timeout_s,
        "solve_time_limit_s": cmd.solve_time_limit_s,
    }
    workflows.start(rec.WORKFLOW, argument, response["execution_id"])
    event = DispatchWindowOpened(
        event_id=derive_event_id("DispatchWindowOpened", response["window_id"]),
        occurred_at=stored["opened_at"],
        window_id=response["window_id"],
        opened_by=stored["opened_by"],
        starts_at=stored["window"]["start"],
        ends_at=stored["window"]["end"],
        execution_id=response["execution_id"],
        schedule_id=stored.get("schedule_id"),
    )
    deps.publisher.publish(deps.codec.topic_of(event.event_type), [deps.codec.to_message(event)])
    return response


def window_status(
    window_id: str, actor: Actor, deps: Deps, workflows: WorkflowExecutions
) -> dict[str, Any]:
    """The window's progress: stage, routes by status, offers, and its execution's state."""
    actor.require("dispatcher")
    progress = rec.window_progress(deps.store, window_id)
    if progress is None:
        raise NotFound(f"no dispatch window {window_id}")
    execution: dict[str, Any] = {"execution_id": progress["execution_id"]}
    try:
        found = workflows.get(progress["execution_id"])
        execution.update(state=found.state, error=found.error)
    except NotFound:
        execution["state"] = "NOT_STARTED"
    except Unavailable:
        execution["state"] = "UNKNOWN"  # the engine is restarting; the window's own state stands
    return {**progress, "execution": execution}


def answer_offer(
    assignment_id: str,
    decision: Decision,
    reason: str | None,
    actor: Actor,
    deps: Deps,
    workflows: WorkflowExecutions,
) -> dict[str, Any]:
    """A driver's answer to a route offer, relayed to the waiting saga as its callback.

    The answer is recorded first, so a retried answer is recognised and a contradicting one
    refused; the callback is (re)sent until the saga has it."""
    actor.require("driver")
    now = deps.clock()
    path = f"{rec.ASSIGNMENTS}/{assignment_id}"

    def record(tx: Transaction) -> dict[str, Any]:
        doc = tx.get(path)
        if doc is None:
            raise NotFound(f"no assignment {assignment_id}")
        data = dict(doc.data)
        if data["driver_id"] != actor.subject:
            raise PermissionDenied(f"assignment {assignment_id} was offered to another driver")
        answered = data.get("answer")
        if answered is not None:
            if answered["decision"] != decision:
                raise Conflict(
                    f"assignment {assignment_id} was already answered: {answered['decision']}"
                )
            return data
        if data["status"] != "OFFERED" or data["expires_at"] <= now:
            raise Conflict(f"the offer {assignment_id} is no longer open ({data['status']})")
        data["answer"] = {"decision": decision, "reason": reason, "at": now}
        tx.update(path, {"answer": data["answer"]})
        return data

    data = deps.store.run_transaction(record)
    body = {"decision": decision, "reason": reason, "driver_id": actor.subject}
    try:
        workflows.send_callback(data["callback_url"], body)
    except Conflict:
        pass  # an earlier send of this answer is queued and not yet read: the saga will have it
    except NotFound as e:
        raise Conflict(f"the offer {assignment_id} is no longer open: its saga has moved on") from e
    return {
        "assignment_id": assignment_id,
        "decision": decision,
        "route_id": data["route_id"],
        "accepted_at": now.isoformat(),
    }
