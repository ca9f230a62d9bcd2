"""``POST /v1/sync-requests``: an operator's on-demand sync publishes the same SyncRequested the
scheduled pull publishes per page; every other role is refused, and a malformed request is
answered with what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from meridian.app.sync_requests import RequestSync, sync_requested
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.domain.events import SyncRequested
from meridian.ports import IdentityVerifier
from services.command.app import create_app
from services.command.handlers import Deps
from tests.fakes import FakeDocumentStore, FakePublisher

CODEC = EventCodec(load_catalog())
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OPERATOR = {"Authorization": "Bearer operator:ops-1"}


class Tokens(IdentityVerifier):
    """Tokens are 'role:subject'."""

    def verify(self, token: str) -> Actor:
        role, _, subject = token.partition(":")
        if not subject:
            raise Unauthenticated("bad token")
        return Actor(subject=subject, role=role)  # type: ignore[arg-type]


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher: FakePublisher) -> TestClient:
    deps = Deps(store=FakeDocumentStore(), publisher=publisher, codec=CODEC, clock=lambda: NOW)
    return TestClient(create_app(deps, Tokens()))


def _published(publisher: FakePublisher) -> SyncRequested:
    ((topic, message),) = publisher.published
    assert topic == "sync.requests"
    event = CODEC.from_message(message.data, message.attributes)
    assert isinstance(event, SyncRequested)
    return event


def test_an_operator_asks_for_ids(client: TestClient, publisher: FakePublisher) -> None:
    answer = client.post(
        "/v1/sync-requests",
        json={"entity": "parcels", "ids": ["p-1", "p-2", "p-1"]},
        headers=OPERATOR,
    )
    assert answer.status_code == 202, answer.text
    event = _published(publisher)
    assert answer.json()["request_id"] == event.request_id
    assert (event.entity, event.origin, event.requester) == ("parcels", "on_demand", "ops-1")
    assert event.ids == ("p-1", "p-2")
    assert event.after_updated_at is None and event.through_updated_at is None


def test_an_operator_asks_for_changes_since(client: TestClient, publisher: FakePublisher) -> None:
    since = "2026-03-01T00:00:00+05:30"
    answer = client.post(
        "/v1/sync-requests", json={"entity": "drivers", "since": since}, headers=OPERATOR
    )
    assert answer.status_code == 202, answer.text
    event = _published(publisher)
    assert event.after_updated_at == datetime.fromisoformat(since)
    assert event.after_id == "" and event.ids == ()


@pytest.mark.parametrize("role", ["dispatcher", "driver", "gateway"])
def test_only_an_operator_may(client: TestClient, publisher: FakePublisher, role: str) -> None:
    answer = client.post(
        "/v1/sync-requests",
        json={"entity": "parcels"},
        headers={"Authorization": f"Bearer {role}:x"},
    )
    assert answer.status_code == 403
    assert "needs the role operator" in answer.json()["detail"]
    assert publisher.published == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"entity": "parcel"}, "'clients', 'drivers', 'vehicles', 'shipments' or 'parcels'"),
        (
            {"entity": "parcels", "ids": ["p-1"], "since": "2026-03-01T00:00:00Z"},
            "give ids or since, not both",
        ),
        ({"entity": "parcels", "since": "2026-03-01T00:00:00"}, "timezone"),
        ({"entity": "parcels", "ids": ["p"] * 1001}, "at most 1000"),
    ],
)
def test_a_malformed_request_says_what_is_wrong(
    client: TestClient, publisher: FakePublisher, body: dict[str, object], says: str
) -> None:
    answer = client.post("/v1/sync-requests", json=body, headers=OPERATOR)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert says in answer.text
    assert publisher.published == []


def test_the_cli_and_the_route_build_the_same_event() -> None:
    command = RequestSync(entity="vehicles", ids=("v-1",))
    event = sync_requested(command, "ops-1", NOW, request_id="op-1")
    again = sync_requested(command, "ops-1", NOW, request_id="op-1")
    assert event == again and event.event_id == again.event_id
