"""A dispatch schedule fired by the embedded platform's scheduler, over real processes: the desk
defines a schedule through the command service, the platform fires it (here every second) as the
scheduler identity, and the window it opens runs the same saga to DISPATCHED as one opened by hand
(tests/e2e/test_dispatch_saga.py, whose stack and desk this test reuses)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from meridian.domain.schedules import window_id
from tests.e2e.test_dispatch_saga import DEPOT, Desk, Stack, accept_all, events_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from meridian.embedded.pubsub.broker import Broker
    from meridian.embedded.pubsub.config import SubscriptionConfig

    stack = Stack(tmp_path_factory.mktemp("dispatch-schedules"))
    stack.env["MERIDIAN_SCHEDULE_FIRE_S"] = "1"
    Broker(stack.data_dir).create_subscription(
        SubscriptionConfig(name="e2e-dispatch-audit", topic="logistics.events")
    )
    stack.start()
    yield stack
    stack.stop()


def test_a_scheduled_window_is_opened_by_the_platform_and_dispatched(runtime: Stack) -> None:
    desk = Desk(runtime, 0)
    # A window that started this minute, in the depot's zone, its cutoff (0) just passed: the
    # schedule is backdated an hour (as if defined earlier), so this minute's window is due.
    zone = ZoneInfo("Asia/Kolkata")
    started = datetime.now(UTC).replace(second=0, microsecond=0)
    schedule_id = f"sch-{desk.suffix}"
    desk.window_id = window_id(schedule_id, started)
    desk.start = started
    desk.seed(parcels=4, vehicles=1, drivers=1, capacity=4)
    plan = {
        "schedule_id": schedule_id,
        "depot_id": "D1",
        "depot": DEPOT,
        "time_zone": "Asia/Kolkata",
        "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "starts": [started.astimezone(zone).strftime("%H:%M")],
        "cutoff_minutes": 0,
        "duration_minutes": 480,
        "solve_time_limit_s": 0.5,
        "offer_timeout_s": 30,
    }
    dispatcher = desk.headers("dispatcher", "dsp-1")
    created = desk.http.post("/v1/dispatch-schedules", json=plan, headers=dispatcher)
    assert created.status_code == 201, created.text
    desk.store.update(
        f"dispatch_schedules/{schedule_id}", {"fired_through": started - timedelta(hours=1)}
    )
    accept_all(desk, routes=1)
    window = desk.settled()
    assert window["status"] == "DISPATCHED"
    assert window["opened_by"] == "dsp-1"
    assert desk.parcel_statuses() == {"ASSIGNED"}
    events = events_for(runtime, desk.window_id, "DispatchCompleted")
    assert events.count("DispatchWindowOpened") == 1 and events.count("DispatchCompleted") == 1
    schedule = desk.store.get(f"dispatch_schedules/{schedule_id}")
    assert schedule is not None and schedule.data["fired_through"] == started
