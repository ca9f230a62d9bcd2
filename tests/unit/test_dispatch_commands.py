"""The command service's dispatch routes over fakes: opening a window starts one execution per
window, progress, and drivers' answers relayed as callbacks (once, to the right driver only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from services.command.app import create_app
from services.command.handlers import Deps
from tests.fakes import FakeDocumentStore, FakePublisher, FakeWorkflows
from tests.unit.test_command_service import DISPATCHER, DRIVER, FakeVerifier

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture
def setup() -> tuple[TestClient, FakeDocumentStore, FakeWorkflows, FakePublisher]:
    store, publisher, workflows = (
        FakeDocumentStore(clock=lambda: NOW),
        FakePublisher(),
        FakeWorkflows(),
    )
    app = create_app(
        Deps(store, publisher, EventCodec(load_catalog()), lambda: NOW), FakeVerifier()
    )
    app.state.workflows = workflows
    return TestClient(app), store, workflows, publisher


WINDOW = {
    "window_id": "w-1",
    "depot": {"lat": 12.97, "lng": 77.59},
    "window": {"start": NOW.isoformat(), "end": (NOW + timedelta(hours=8)).isoformat()},
    "offer_timeout_s": 60,
}


def test_opening_a_window_twice_starts_one_execution(setup: Any) -> None:
    client, _, workflows, publisher = setup
    first = client.post("/v1/dispatch-windows", json=WINDOW, headers=DISPATCHER)
    second = client.post("/v1/dispatch-windows", json=WINDOW, headers=DISPATCHER)
    assert first.status_code == second.status_code == 202
    assert first.json()["execution_id"] == second.json()["execution_id"] == "dispatch-w-1"
    assert list(workflows.executions) == ["dispatch-w-1"]
    assert workflows.executions["dispatch-w-1"].argument["offer_timeout_s"] == 60
    ids = {m.attributes["eventId"] for _, m in publisher.published}
    assert len(ids) == 1  # republished on a repeat, with the same event id
    progress = client.get("/v1/dispatch-windows/w-1", headers=DISPATCHER).json()
    assert (progress["status"], progress["execution"]["state"]) == ("OPEN", "ACTIVE")
    assert client.post("/v1/dispatch-windows", json=WINDOW, headers=DRIVER).status_code == 403
    assert client.get("/v1/dispatch-windows/nope", headers=DISPATCHER).status_code == 404


def test_a_driver_answer_is_sent_once_and_only_by_that_driver(setup: Any) -> None:
    client, store, workflows, _ = setup
    store.create(
        "assignments/a-1",
        {
            "assignment_id": "a-1",
            "driver_id": "drv-7",
            "route_id": "r-1",
            "status": "OFFERED",
            "callback_url": "http://engine/cb/1",
            "expires_at": NOW + timedelta(minutes=5),
        },
    )
    other = {"Authorization": "Bearer driver:drv-8"}
    assert client.post("/v1/assignments/a-1:accept", headers=other).status_code == 403
    assert client.post("/v1/assignments/a-1:accept", headers=DRIVER).status_code == 202
    assert client.post("/v1/assignments/a-1:accept", headers=DRIVER).status_code == 202  # a retry
    assert workflows.callbacks == [
        ("http://engine/cb/1", {"decision": "accept", "reason": None, "driver_id": "drv-7"})
    ]
    assert client.post("/v1/assignments/a-1:decline", headers=DRIVER).status_code == 409
    assert client.post("/v1/assignments/nope:accept", headers=DRIVER).status_code == 404


def test_an_expired_offer_cannot_be_answered(setup: Any) -> None:
    client, store, workflows, _ = setup
    store.create(
        "assignments/a-2",
        {
            "assignment_id": "a-2",
            "driver_id": "drv-7",
            "route_id": "r-1",
            "status": "OFFERED",
            "callback_url": "http://engine/cb/2",
            "expires_at": NOW - timedelta(seconds=1),
        },
    )
    response = client.post("/v1/assignments/a-2:decline", json={"reason": "sick"}, headers=DRIVER)
    assert response.status_code == 409 and workflows.callbacks == []
