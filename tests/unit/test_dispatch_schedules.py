"""Scheduled dispatch windows over fakes: when a schedule's windows are due (cutoffs, weekdays, the
depot's time zone and its daylight-saving changes), the desk's routes, firing (only as the
scheduler, idempotently), and a window opened on a schedule against one opened by hand: the same
event field by field but for ``schedule_id``, the same saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
from fastapi.testclient import TestClient

from meridian import adapters
from meridian.config import Settings
from meridian.domain.schedules import DispatchSchedule, due_windows, next_window, window_id
from meridian.embedded.oidc import TokenIssuer
from services.command.app import create_app
from services.command.handlers import Deps
from services.command.routes.schedules import FIRE_AUDIENCE, FIRE_PATH, SchedulerCalls
from tests.fakes import FakeDocumentStore, FakePublisher, FakeWorkflows
from tests.unit.test_command_service import CODEC, DISPATCHER, DRIVER, FakeVerifier

# Monday 23 November 2026
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
PLAN: dict[str, Any] = {
    "schedule_id": "d1-weekdays",
    "depot_id": "D1",
    "depot": {"lat": 12.97, "lng": 77.59},
    "time_zone": "Asia/Kolkata",
    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
    "starts": ["06:00", "11:00"],
    "cutoff_minutes": 30,
    "duration_minutes": 240,
    "offer_timeout_s": 60,
}


def schedule(**changes: Any) -> DispatchSchedule:
    return DispatchSchedule.model_validate({**PLAN, **changes})


def test_a_window_is_due_at_its_cutoff_in_the_depots_time_zone() -> None:
    kolkata = schedule()  # UTC+05:30: 06:00 local is 00:30 UTC, due at 00:00 UTC
    cutoff = MONDAY  # 05:30 in Kolkata
    assert due_windows(kolkata, cutoff - timedelta(days=1), cutoff - timedelta(seconds=1)) == []
    (due,) = due_windows(kolkata, cutoff - timedelta(days=1), cutoff)
    assert due.due_at == cutoff
    assert (due.window.start, due.window.end) == (
        datetime(2026, 11, 23, 0, 30, tzinfo=UTC),
        datetime(2026, 11, 23, 4, 30, tzinfo=UTC),
    )
    assert due.window_id == window_id("d1-weekdays", cutoff) == "d1-weekdays-20261123T0000Z"
    # a firing that missed the cutoff opens the window while it is not over (until 04:30 UTC)
    assert due_windows(kolkata, cutoff - timedelta(minutes=1), MONDAY + timedelta(hours=4)) == [due]
    # the 11:00 window's cutoff is 10:30 local, 05:00 UTC; by then the first one is over, and a
    # firing that missed all of it does not open it late
    (second,) = due_windows(kolkata, cutoff - timedelta(minutes=1), MONDAY + timedelta(hours=5))
    assert second.due_at == MONDAY + timedelta(hours=5)
    assert second.window.start == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)


def test_firing_opens_only_what_it_has_not_opened_yet() -> None:
    kolkata = schedule()
    now = MONDAY + timedelta(minutes=1)
    (due,) = due_windows(kolkata, MONDAY - timedelta(hours=1), now)
    assert due_windows(kolkata, due.due_at, now) == []  # fired through it


def test_weekdays_are_the_depots_local_days() -> None:
    # Auckland is UTC+13 in November: Monday 06:00 there is Sunday 17:00 UTC
    auckland = schedule(time_zone="Pacific/Auckland", weekdays=["mon"], starts=["06:00"])
    sunday_utc = datetime(2026, 11, 22, 16, 30, tzinfo=UTC)
    (due,) = due_windows(auckland, sunday_utc - timedelta(hours=1), sunday_utc)
    assert due.window.start == datetime(2026, 11, 22, 17, 0, tzinfo=UTC)
    # a Saturday in Kolkata is not a weekday, though Friday's evening in UTC is
    saturday = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    assert due_windows(schedule(), saturday - timedelta(hours=1), saturday) == []
    assert next_window(schedule(), saturday).due_at == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)


def test_a_cutoff_may_fall_on_the_day_before() -> None:
    early = schedule(starts=["00:15"], cutoff_minutes=60, weekdays=["mon"])
    # Monday 00:15 in Kolkata is Sunday 18:45 UTC; its cutoff Sunday 23:15 local, 17:45 UTC
    sunday = datetime(2026, 11, 22, 17, 45, tzinfo=UTC)
    (due,) = due_windows(early, sunday - timedelta(minutes=1), sunday)
    assert due.window.start == datetime(2026, 11, 22, 18, 45, tzinfo=UTC)


def test_local_times_hold_across_daylight_saving_changes() -> None:
    berlin = schedule(time_zone="Europe/Berlin", weekdays=["sat", "sun"], starts=["06:00"])
    # 2027-03-28: Berlin moves from UTC+1 to UTC+2 at 02:00; 06:00 local either side
    saturday = next_window(berlin, datetime(2027, 3, 27, 0, 0, tzinfo=UTC))
    sunday = next_window(berlin, saturday.due_at)
    assert saturday.window.start == datetime(2027, 3, 27, 5, 0, tzinfo=UTC)
    assert sunday.window.start == datetime(2027, 3, 28, 4, 0, tzinfo=UTC)
    # a start the change skips is read with the offset before it: 02:30 is 01:30 UTC
    skipped = schedule(time_zone="Europe/Berlin", weekdays=["sun"], starts=["02:30"])
    gap = next_window(skipped, datetime(2027, 3, 27, 0, 0, tzinfo=UTC))
    assert gap.window.start == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "change",
    [
        {"time_zone": "Mars/Olympus"},
        {"starts": ["6:00"]},
        {"starts": ["24:00"]},
        {"starts": ["06:00", "06:00"]},
        {"weekdays": []},
        {"weekdays": ["monday"]},
        {"schedule_id": "s" * 97},
        {"cutoff_minutes": -1},
    ],
)
def test_a_schedule_is_checked(change: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        schedule(**change)


# Routes ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Scheduler:
    """Accepts 'Bearer scheduler' for the fire audience, as the real check does for its token."""

    def __init__(self) -> None:
        self.audiences: list[str] = []

    def check(self, authorization: str | None, audience: str) -> None:
        from meridian.domain.errors import PermissionDenied, Unauthenticated

        self.audiences.append(audience)
        if not authorization:
            raise Unauthenticated("no token")
        if authorization != "Bearer scheduler":
            raise PermissionDenied("not the scheduler")


SCHEDULER = {"Authorization": "Bearer scheduler"}


def service(clock: Clock) -> tuple[TestClient, FakeDocumentStore, FakePublisher, FakeWorkflows]:
    store, publisher, workflows = FakeDocumentStore(clock=clock), FakePublisher(), FakeWorkflows()
    app = create_app(
        Deps(store, publisher, CODEC, clock),
        FakeVerifier(),
        workflows,
        scheduler=SchedulerCalls(Scheduler()),  # type: ignore[arg-type]
    )
    return TestClient(app), store, publisher, workflows


def test_the_desk_defines_lists_reads_and_deletes_schedules() -> None:
    clock = Clock(MONDAY - timedelta(hours=2))
    client, _, _, _ = service(clock)
    created = client.post("/v1/dispatch-schedules", json=PLAN, headers=DISPATCHER)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == "/v1/dispatch-schedules/d1-weekdays"
    shown = created.json()
    assert shown["next_window"]["window_id"] == "d1-weekdays-20261123T0000Z"
    assert shown["created_by"] == "dsp-1"
    again = client.post("/v1/dispatch-schedules", json=PLAN, headers=DISPATCHER)
    assert again.status_code == 201 and again.json() == shown
    other = {**PLAN, "starts": ["07:00"]}
    assert client.post("/v1/dispatch-schedules", json=other, headers=DISPATCHER).status_code == 409
    assert client.post("/v1/dispatch-schedules", json=PLAN, headers=DRIVER).status_code == 403
    bad = client.post(
        "/v1/dispatch-schedules", json={**PLAN, "time_zone": "X/Y"}, headers=DISPATCHER
    )
    assert bad.status_code == 422
    listed = client.get("/v1/dispatch-schedules", headers=DISPATCHER).json()["schedules"]
    assert [s["schedule_id"] for s in listed] == ["d1-weekdays"]
    read = client.get("/v1/dispatch-schedules/d1-weekdays", headers=DISPATCHER)
    assert read.json() == shown
    assert client.get("/v1/dispatch-schedules/d1-weekdays", headers=DRIVER).status_code == 403
    gone = client.delete("/v1/dispatch-schedules/d1-weekdays", headers=DISPATCHER)
    assert gone.status_code == 204
    assert client.get("/v1/dispatch-schedules/d1-weekdays", headers=DISPATCHER).status_code == 404
    assert (
        client.delete("/v1/dispatch-schedules/d1-weekdays", headers=DISPATCHER).status_code == 404
    )


def test_firing_opens_each_due_window_once() -> None:
    clock = Clock(MONDAY - timedelta(hours=2))
    client, _, publisher, workflows = service(clock)
    assert client.post("/v1/dispatch-schedules", json=PLAN, headers=DISPATCHER).status_code == 201
    assert client.post(FIRE_PATH, headers=SCHEDULER).json() == {"opened": []}  # not due yet
    clock.now = MONDAY + timedelta(seconds=20)
    first = client.post(FIRE_PATH, headers=SCHEDULER)
    second = client.post(FIRE_PATH, headers=SCHEDULER)
    assert first.status_code == second.status_code == 200
    assert first.json() == {"opened": ["d1-weekdays-20261123T0000Z"]}
    assert second.json() == {"opened": []}
    assert list(workflows.executions) == ["dispatch-d1-weekdays-20261123T0000Z"]
    assert workflows.executions["dispatch-d1-weekdays-20261123T0000Z"].argument == {
        "window_id": "d1-weekdays-20261123T0000Z",
        "max_offers": 3,
        "offer_timeout_s": 60,
        "solve_time_limit_s": 10,
    }
    assert len(publisher.published) == 1
    status = client.get("/v1/dispatch-windows/d1-weekdays-20261123T0000Z", headers=DISPATCHER)
    assert status.json()["opened_by"] == "dsp-1"
    # a deleted schedule opens nothing more
    client.delete("/v1/dispatch-schedules/d1-weekdays", headers=DISPATCHER)
    clock.now = MONDAY + timedelta(hours=5)
    assert client.post(FIRE_PATH, headers=SCHEDULER).json() == {"opened": []}


def test_only_the_scheduler_may_fire() -> None:
    client, _, _, _ = service(Clock(MONDAY))
    assert client.post(FIRE_PATH).status_code == 401
    assert client.post(FIRE_PATH, headers=DISPATCHER).status_code == 403


def test_only_the_scheduler_identity_may_fire_with_a_signed_token(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)  # the data directory's key, which the service trusts
    settings = Settings(data_dir=tmp_path, base_port=9960)
    auth = adapters.push_authenticator(settings, frozenset({settings.scheduler_identity}))
    clock = Clock(MONDAY)
    app = create_app(
        Deps(FakeDocumentStore(clock=clock), FakePublisher(), CODEC, clock),
        FakeVerifier(),
        FakeWorkflows(),
        scheduler=SchedulerCalls(auth),
    )
    client = TestClient(app)
    pusher = issuer.token(FIRE_AUDIENCE, settings.push_identity)
    assert client.post(FIRE_PATH, headers={"Authorization": f"Bearer {pusher}"}).status_code == 403
    elsewhere = issuer.token("http://elsewhere/tick", settings.scheduler_identity)
    refused = client.post(FIRE_PATH, headers={"Authorization": f"Bearer {elsewhere}"})
    assert refused.status_code == 401
    token = issuer.token(FIRE_AUDIENCE, settings.scheduler_identity)
    answer = client.post(FIRE_PATH, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json() == {"opened": []}


def test_without_a_scheduler_check_firing_is_unavailable() -> None:
    clock = Clock(MONDAY)
    app = create_app(
        Deps(FakeDocumentStore(clock=clock), FakePublisher(), CODEC, clock),
        FakeVerifier(),
        FakeWorkflows(),
    )
    assert TestClient(app).post(FIRE_PATH, headers=SCHEDULER).status_code == 503


def test_a_window_opened_on_a_schedule_is_the_one_opened_by_hand() -> None:
    """Both ways converge on one saga: the same event field by field (``schedule_id`` aside,
    the trigger), the same window document, the same saga arguments."""
    due = MONDAY
    by_schedule = service(Clock(due - timedelta(hours=2)))
    by_hand = service(Clock(due))
    client, _, _, _ = by_schedule
    assert client.post("/v1/dispatch-schedules", json=PLAN, headers=DISPATCHER).status_code == 201
    client.app.state.deps.clock.now = due  # type: ignore[attr-defined]
    assert client.post(FIRE_PATH, headers=SCHEDULER).json()["opened"] == [
        "d1-weekdays-20261123T0000Z"
    ]
    hand = by_hand[0].post(
        "/v1/dispatch-windows",
        json={
            "window_id": "d1-weekdays-20261123T0000Z",
            "depot": PLAN["depot"],
            "window": {"start": "2026-11-23T06:00:00+05:30", "end": "2026-11-23T10:00:00+05:30"},
            "offer_timeout_s": 60,
        },
        headers=DISPATCHER,
    )
    assert hand.status_code == 202, hand.text

    def opened(setup: Any) -> dict[str, Any]:
        (message,) = [m for _, m in setup[2].published]
        event = CODEC.from_message(message.data, message.attributes)
        assert event.event_type == "DispatchWindowOpened"
        # the trace context is the request's, not the event's (set once tracing is configured)
        attributes = {k: v for k, v in message.attributes.items() if k != "traceparent"}
        return {"attributes": attributes, **event.model_dump()}

    scheduled, manual = opened(by_schedule), opened(by_hand)
    assert scheduled.pop("schedule_id") == "d1-weekdays"
    assert manual.pop("schedule_id") is None
    assert scheduled == manual

    def window(setup: Any) -> dict[str, Any]:
        doc = setup[1].get("dispatch_windows/d1-weekdays-20261123T0000Z")
        return {k: v for k, v in doc.data.items() if k != "schedule_id"}

    assert window(by_schedule) == window(by_hand)
    assert {k: (e.workflow, e.argument) for k, e in by_schedule[3].executions.items()} == {
        k: (e.workflow, e.argument) for k, e in by_hand[3].executions.items()
    }
