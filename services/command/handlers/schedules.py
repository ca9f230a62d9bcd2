"""The dispatch desk's recurring windows: define a schedule, list, read and delete schedules; and
fire them, which opens every window the schedules make due (Cloud Scheduler calls it every minute
in GCP, the embedded platform's scheduler locally).

Opening is ``dispatch.open_window``, the very use case the desk calls by hand, as the dispatcher
who made the schedule: both ways write one window document, publish one ``DispatchWindowOpened``
(which differs only in its ``schedule_id``) and start one saga. A schedule remembers how far it
has fired (``fired_through``, the due time of the last window it opened), and a window's id
derives from the schedule and its due time, so two firings that overlap open one window.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meridian.domain.actors import Actor
from meridian.domain.errors import Conflict, NotFound, Unavailable
from meridian.domain.schedules import DispatchSchedule, due_windows, next_window
from meridian.observability import get_logger
from meridian.ports import Query, Transaction, WorkflowExecutions
from services.command.handlers import Deps
from services.command.handlers.dispatch import OpenWindow, open_window

SCHEDULES = "dispatch_schedules"

log = get_logger(__name__)


def schedule_path(schedule_id: str) -> str:
    return f"{SCHEDULES}/{schedule_id}"


def create_schedule(schedule: DispatchSchedule, actor: Actor, deps: Deps) -> dict[str, Any]:
    """Store the schedule; the same definition again is answered as the first time, another one
    under the same id is a Conflict. Only windows due after now are opened."""
    actor.require("dispatcher")
    now = deps.clock()
    path = schedule_path(schedule.schedule_id)

    def work(tx: Transaction) -> dict[str, Any]:
        existing = tx.get(path)
        if existing is not None:
            if _definition(existing.data) != schedule:
                raise Conflict(f"dispatch schedule {schedule.schedule_id} exists with another plan")
            return dict(existing.data)
        document = {
            **schedule.model_dump(mode="json"),
            "created_by": actor.subject,
            "created_at": now,
            "fired_through": now,
        }
        tx.create(path, document)
        return document

    return _shown(deps.store.run_transaction(work), now)


def list_schedules(actor: Actor, deps: Deps) -> list[dict[str, Any]]:
    actor.require("dispatcher")
    now = deps.clock()
    found = deps.store.query(Query(SCHEDULES).order_by("schedule_id"))
    return [_shown(doc.data, now) for doc in found]


def get_schedule(schedule_id: str, actor: Actor, deps: Deps) -> dict[str, Any]:
    actor.require("dispatcher")
    doc = deps.store.get(schedule_path(schedule_id))
    if doc is None:
        raise NotFound(f"no dispatch schedule {schedule_id}")
    return _shown(doc.data, deps.clock())


def delete_schedule(schedule_id: str, actor: Actor, deps: Deps) -> None:
    """Stop the schedule; windows it already opened go on."""
    actor.require("dispatcher")
    path = schedule_path(schedule_id)

    def work(tx: Transaction) -> None:
        if tx.get(path) is None:
            raise NotFound(f"no dispatch schedule {schedule_id}")
        tx.delete(path)

    deps.store.run_transaction(work)


def fire(deps: Deps, workflows: WorkflowExecutions) -> list[str]:
    """Open every window due now that its schedule has not opened yet; the ids opened.

    A schedule whose window cannot be opened (the engine restarting) keeps its place and is
    retried by the next firing; the others go on, and the firing answers Unavailable."""
    now = deps.clock()
    opened: list[str] = []
    failed: list[str] = []
    for doc in deps.store.query(Query(SCHEDULES)):
        schedule = _definition(doc.data)
        dispatcher = Actor(subject=doc.data["created_by"], role="dispatcher")
        try:
            for due in due_windows(schedule, doc.data["fired_through"], now):
                command = OpenWindow(
                    depot=schedule.depot,
                    window=due.window,
                    window_id=due.window_id,
                    max_offers=schedule.max_offers,
                    offer_timeout_s=schedule.offer_timeout_s,
                    solve_time_limit_s=schedule.solve_time_limit_s,
                    schedule_id=schedule.schedule_id,
                )
                open_window(command, dispatcher, deps, workflows, None)
                _fired_through(deps, schedule.schedule_id, due.due_at)
                opened.append(due.window_id)
        except Unavailable as e:
            log.warning("scheduled window not opened", schedule=schedule.schedule_id, error=str(e))
            failed.append(schedule.schedule_id)
    if failed:
        raise Unavailable(f"dispatch schedules {', '.join(failed)} are retried at the next firing")
    return opened


def _fired_through(deps: Deps, schedule_id: str, due_at: datetime) -> None:
    path = schedule_path(schedule_id)

    def work(tx: Transaction) -> None:
        doc = tx.get(path)
        if doc is not None and doc.data["fired_through"] < due_at:  # else deleted, or overtaken
            tx.update(path, {"fired_through": due_at})

    deps.store.run_transaction(work)


def _definition(data: Mapping[str, Any]) -> DispatchSchedule:
    return DispatchSchedule.model_validate({k: data[k] for k in DispatchSchedule.model_fields})


def _shown(data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A stored schedule as the desk sees it, with the next window it will open."""
    schedule = _definition(data)
    upcoming = next_window(schedule, max(now, data["fired_through"]))
    return {
        **schedule.model_dump(mode="json"),
        "created_by": data["created_by"],
        "created_at": data["created_at"].isoformat(),
        "next_window": {
            "window_id": upcoming.window_id,
            "opens_at": upcoming.due_at.isoformat(),
            "start": upcoming.window.start.isoformat(),
            "end": upcoming.window.end.isoformat(),
        },
    }
