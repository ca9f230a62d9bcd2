"""The command service over fakes of its ports: status codes, idempotency, authorization."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from meridian import observability
from meridian.app.auth import api_key_digest
from meridian.app.records import vehicle_assignment_document, vehicle_assignment_path
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.concurrency.offload import Inline
from meridian.config import ConfigError, Settings
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.domain.model import GeoPoint
from meridian.domain.telemetry import PingWindow
from meridian.edge.problems import install_problem_handlers
from meridian.observability import configure_tracing
from meridian.ports import Document, IdentityVerifier, Message, Query
from services.command.app import create_app
from services.command.handlers import Deps
from services.command.handlers.telemetry import REFUSED
from tests.fakes import FakeDocumentStore, FakePublisher

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
CODEC = EventCodec(load_catalog())


class FakeVerifier(IdentityVerifier):
    """Tokens are 'role:subject'."""

    def verify(self, token: str) -> Actor:
        role, _, subject = token.partition(":")
        if role not in ("driver", "dispatcher", "gateway") or not subject:
            raise Unauthenticated("bad token")
        return Actor(subject=subject, role=role)  # type: ignore[arg-type]


@pytest.fixture
def store() -> FakeDocumentStore:
    store = FakeDocumentStore(clock=lambda: NOW)
    store.create(
        f"api_keys/{api_key_digest('key-freshmart')}", {"client_id": "c-freshmart", "active": True}
    )
    return store


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(store: FakeDocumentStore, publisher: FakePublisher) -> TestClient:
    # Tracing as the service configures it (``serve``): no exporter, so request spans are not
    # recorded; the hot routes are served directly (``PlainRoutes.include_direct``) either way.
    configure_tracing("command")
    deps = Deps(store=store, publisher=publisher, codec=CODEC, clock=lambda: NOW)
    return TestClient(create_app(deps, FakeVerifier()))


CLIENT = {"X-API-Key": "key-freshmart"}
DISPATCHER = {"Authorization": "Bearer dispatcher:dsp-1"}
DRIVER = {"Authorization": "Bearer driver:drv-7"}
GATEWAY = {"Authorization": "Bearer gateway:gw-fleet"}


def parcel_body(parcel_id: str = "p-1") -> dict[str, Any]:
    start = NOW + timedelta(hours=1)
    return {
        "parcel_id": parcel_id,
        "recipient": {"name": "Asha", "phone": "+919812345678"},
        "stop": {
            "location": {"lat": 12.97, "lng": 77.59},
            "address": "1 MG Road",
            "window": {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()},
        },
        "weight_kg": 2.5,
    }


def deliver_body() -> dict[str, Any]:
    return {
        "vehicle_id": "veh-3",
        "delivered_at": NOW.isoformat(),
        "position": {"lat": 12.97, "lng": 77.59},
        "pod": {"signature_ref": "sig/p-1.png"},
    }


def out_for_delivery(client: TestClient, parcel_id: str = "p-1") -> None:
    assert (
        client.post(
            "/v1/shipments",
            json={"shipment_id": "s-1", "parcels": [parcel_body(parcel_id)]},
            headers=CLIENT,
        ).status_code
        == 202
    )
    assign = {"route_id": "r-1", "driver_id": "drv-7", "vehicle_id": "veh-3"}
    assert (
        client.post(f"/v1/parcels/{parcel_id}:assign", json=assign, headers=DISPATCHER).status_code
        == 202
    )
    out = {"vehicle_id": "veh-3", "at": NOW.isoformat()}
    assert (
        client.post(
            f"/v1/parcels/{parcel_id}:out-for-delivery", json=out, headers=DRIVER
        ).status_code
        == 202
    )


def carrying(store: FakeDocumentStore, driver: str, *vehicles: str) -> None:
    """``driver`` carries a parcel out for delivery on each of ``vehicles``, as the desk's
    ``:assign`` or the dispatch saga's confirmed route leaves it: the parcel, and the vehicle's
    assignment naming the driver."""
    for vehicle in vehicles:
        store.set(
            f"parcels/p-{driver}-{vehicle}",
            {"driver_id": driver, "vehicle_id": vehicle, "status": "OUT_FOR_DELIVERY"},
        )
        store.set(
            vehicle_assignment_path(vehicle),
            vehicle_assignment_document(
                vehicle, driver, NOW, "AssignParcel", Actor("d", "dispatcher")
            ),
        )


def ping(vehicle_id: str = "veh-3", at: datetime = NOW, **fields: Any) -> dict[str, Any]:
    position = {"lat": 12.9, "lng": 77.6}
    return {"vehicle_id": vehicle_id, "position": position, "recorded_at": at.isoformat(), **fields}


def test_a_shipment_and_its_parcels_are_written_in_one_transaction(
    client: TestClient, store: FakeDocumentStore
) -> None:
    commits = store.commits
    response = client.post(
        "/v1/shipments", json={"parcels": [parcel_body("p-1"), parcel_body("p-2")]}, headers=CLIENT
    )
    assert response.status_code == 202
    body = response.json()
    assert body["parcel_ids"] == ["p-1", "p-2"]
    assert body["status_url"] == f"/v1/shipments/{body['shipment_id']}"
    assert store.commits == commits + 1
    assert store.get("parcels/p-2").data["status"] == "CREATED"  # type: ignore[union-attr]
    shipment = client.get(body["status_url"], headers=CLIENT).json()
    assert shipment["parcels"] == {"p-1": "CREATED", "p-2": "CREATED"}


def test_deliver_answers_202_and_a_retry_with_the_same_key_returns_the_first_response(
    client: TestClient, store: FakeDocumentStore
) -> None:
    out_for_delivery(client)
    headers = {**DRIVER, "Idempotency-Key": "k-1"}
    first = client.post("/v1/parcels/p-1:deliver", json=deliver_body(), headers=headers)
    commits = store.commits
    second = client.post("/v1/parcels/p-1:deliver", json=deliver_body(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert (
        first.json()
        == second.json()
        == {"parcel_id": "p-1", "status": "DELIVERED", "accepted_at": NOW.isoformat()}
    )
    assert store.commits == commits + 1  # the replay is a read-only transaction: nothing written
    parcel = store.get("parcels/p-1").data  # type: ignore[union-attr]
    assert parcel["status"] == "DELIVERED"
    assert parcel["pod"]["signature_ref"] == "sig/p-1.png"
    assert parcel["_last_command"]["name"] == "DeliverParcel"


def test_the_same_key_with_another_body_is_refused(client: TestClient) -> None:
    out_for_delivery(client)
    headers = {**DRIVER, "Idempotency-Key": "k-1"}
    assert (
        client.post("/v1/parcels/p-1:deliver", json=deliver_body(), headers=headers).status_code
        == 202
    )
    other = {**deliver_body(), "vehicle_id": "veh-9"}
    response = client.post("/v1/parcels/p-1:deliver", json=other, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "already used for a different request" in response.json()["detail"]


def test_an_illegal_move_is_409_naming_the_current_state(client: TestClient) -> None:
    out_for_delivery(client)
    assert (
        client.post("/v1/parcels/p-1:deliver", json=deliver_body(), headers=DRIVER).status_code
        == 202
    )
    response = client.post("/v1/parcels/p-1:deliver", json=deliver_body(), headers=DRIVER)
    assert response.status_code == 409
    problem = response.json()
    assert problem["current_state"] == "DELIVERED"
    assert "cannot deliver parcel p-1: it is DELIVERED" in problem["detail"]


def test_unknown_parcel_is_404(client: TestClient) -> None:
    response = client.post("/v1/parcels/p-404:deliver", json=deliver_body(), headers=DRIVER)
    assert response.status_code == 404
    assert response.json()["detail"] == "no parcel p-404"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"Authorization": "Bearer forged"}, 401),
        ({"X-API-Key": "stolen"}, 401),
        ({"Authorization": "Bearer driver:drv-8"}, 403),  # another driver
        (DISPATCHER, 403),  # dispatchers do not deliver
        (CLIENT, 403),
    ],
)
def test_credentials_are_checked(client: TestClient, headers: dict[str, str], status: int) -> None:
    out_for_delivery(client)
    response = client.post("/v1/parcels/p-1:deliver", json=deliver_body(), headers=headers)
    assert response.status_code == status, response.json()
    assert response.headers["content-type"] == "application/problem+json"


def test_a_driver_cannot_act_as_another_driver(client: TestClient) -> None:
    out_for_delivery(client)
    body = {**deliver_body(), "driver_id": "drv-8"}
    assert client.post("/v1/parcels/p-1:deliver", json=body, headers=DRIVER).status_code == 403


def test_the_desk_may_give_a_parcel_its_place_on_the_route(
    client: TestClient, store: FakeDocumentStore
) -> None:
    client.post("/v1/shipments", json={"parcels": [parcel_body("p-1")]}, headers=CLIENT)
    assign = {"route_id": "r-1", "driver_id": "drv-7", "vehicle_id": "veh-3", "stop_sequence": -1}
    refused = client.post("/v1/parcels/p-1:assign", json=assign, headers=DISPATCHER)
    assert refused.status_code == 422 and "stop_sequence" in refused.text
    assign["stop_sequence"] = 3
    assert client.post("/v1/parcels/p-1:assign", json=assign, headers=DISPATCHER).status_code == 202
    assert store.get("parcels/p-1").data["stop_sequence"] == 3  # type: ignore[union-attr]


def test_bad_input_lists_every_field_error(client: TestClient) -> None:
    body = {"vehicle_id": "", "delivered_at": "yesterday", "position": {"lat": 123}, "extra": 1}
    response = client.post("/v1/parcels/p-1:deliver", json=body, headers=DRIVER)
    assert response.status_code == 422
    locations = {e["location"] for e in response.json()["errors"]}
    assert {
        "body.vehicle_id",
        "body.delivered_at",
        "body.position.lat",
        "body.position.lng",
        "body.extra",
    } <= locations


def test_a_blank_reason_is_422_naming_the_field(client: TestClient) -> None:
    # Found by the schemathesis run: "\r" passed the request model but not the stripped command.
    body = {"vehicle_id": "veh-3", "failed_at": NOW.isoformat(), "reason": "\r"}
    response = client.post("/v1/parcels/p-1:fail", json=body, headers=DRIVER)
    assert response.status_code == 422
    assert [e["location"] for e in response.json()["errors"]] == ["body.reason"]


def test_a_domain_value_refusing_accepted_input_is_422_not_500() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        GeoPoint(lat=91, lng=0)

    response = TestClient(app).get("/boom")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["location"] == "lat"


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/parcels/p-1:deliver",
        content=b"{not json",
        headers={**DRIVER, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["title"] == "malformed json"


def test_a_client_sees_only_its_own_parcels(client: TestClient, store: FakeDocumentStore) -> None:
    out_for_delivery(client)
    store.create(f"api_keys/{api_key_digest('key-other')}", {"client_id": "c-other"})
    assert client.get("/v1/parcels/p-1", headers=CLIENT).json()["status"] == "OUT_FOR_DELIVERY"
    assert client.get("/v1/parcels/p-1", headers={"X-API-Key": "key-other"}).status_code == 404


def test_status_comes_from_the_read_model_when_it_exists(
    client: TestClient, store: FakeDocumentStore
) -> None:
    out_for_delivery(client)
    store.set(
        "parcel_status/p-1",
        {"eta": "2026-11-21T10:15:00+00:00", "sla": "ON_TIME", "route_id": "r-1"},
    )
    status = client.get("/v1/parcels/p-1", headers=DISPATCHER).json()
    assert (status["status"], status["eta"], status["sla"]) == (
        "OUT_FOR_DELIVERY",
        "2026-11-21T10:15:00+00:00",
        "ON_TIME",
    )


def test_telemetry_keeps_good_pings_and_rejects_bad_ones_one_by_one(
    client: TestClient, store: FakeDocumentStore, publisher: FakePublisher
) -> None:
    out_for_delivery(client)  # drv-7 drives veh-3
    documents = dict(store.docs)
    good = {
        "vehicle_id": "veh-3",
        "position": {"lat": 12.9, "lng": 77.6},
        "recorded_at": NOW.isoformat(),
        "speed_mps": 8,
    }
    pings = [
        good,
        {**good, "position": {"lat": 200, "lng": 0}},
        {**good, "recorded_at": "2026-11-21T09:00:00"},
        good,
    ]
    response = client.post("/v1/telemetry", json={"pings": pings}, headers=DRIVER)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert "position.lat" in body["rejected"][0]["error"]
    assert "timezone" in body["rejected"][1]["error"]
    assert [topic for topic, _ in publisher.published] == ["vehicle.telemetry"] * 2
    message = publisher.published[0][1]
    assert message.attributes["vehicleId"] == "veh-3"
    assert message.attributes["eventType"] == "VehiclePing"
    assert CODEC.from_message(message.data, message.attributes).driver_id == "drv-7"
    assert store.docs == documents  # telemetry never touches the document store


def test_telemetry_batches_are_bounded(client: TestClient) -> None:
    ping = {"vehicle_id": "v", "position": {"lat": 0, "lng": 0}, "recorded_at": NOW.isoformat()}
    response = client.post("/v1/telemetry", json={"pings": [ping] * 501}, headers=DRIVER)
    assert response.status_code == 422
    assert "500" in response.json()["detail"]


def test_a_batch_of_valid_pings_publishes_each_as_a_vehicle_ping(
    client: TestClient, store: FakeDocumentStore, publisher: FakePublisher
) -> None:
    carrying(store, "drv-7", "veh-0", "veh-1", "veh-2")
    pings = [
        {
            "vehicle_id": f"veh-{i}",
            "position": {"lat": 12.9 + i / 100, "lng": 77.6},
            "recorded_at": (NOW + timedelta(seconds=i)).isoformat(),
            "heading_deg": 90,
            "speed_mps": 8.5,
            "accuracy_m": None if i else 4.0,
        }
        for i in range(3)
    ]
    response = client.post("/v1/telemetry", json={"pings": pings}, headers=DRIVER)
    assert response.json() == {"accepted": 3, "rejected": []}
    events = [CODEC.from_message(m.data, m.attributes) for _, m in publisher.published]
    assert [(e.vehicle_id, e.lat, e.recorded_at) for e in events] == [
        (f"veh-{i}", 12.9 + i / 100, NOW + timedelta(seconds=i)) for i in range(3)
    ]
    assert events[0].accuracy_m == 4.0 and events[1].accuracy_m is None
    assert {(e.driver_id, e.heading_deg, e.speed_mps) for e in events} == {("drv-7", 90.0, 8.5)}
    # The event id is derived from the vehicle and the ping's time: a retried batch republishes
    # the same ids, which consumers deduplicate.
    again = client.post("/v1/telemetry", json={"pings": pings}, headers=DRIVER)
    assert again.status_code == 202
    ids = [m.attributes["eventId"] for _, m in publisher.published]
    assert ids[:3] == ids[3:] and len(set(ids)) == 3


@pytest.mark.parametrize("local", [True, False])
def test_a_local_publish_runs_on_the_event_loop_and_a_remote_one_on_the_ingest_thread(
    store: FakeDocumentStore, local: bool
) -> None:
    class Recording(FakePublisher):
        def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
            threads.append(threading.current_thread().name)
            return super().publish(topic, messages)

    threads: list[str] = []
    carrying(store, "drv-7", "veh-1")
    deps = Deps(store=store, publisher=Recording(), codec=CODEC, clock=lambda: NOW)
    ping = {"vehicle_id": "veh-1", "position": {"lat": 12.9, "lng": 77.6}, "recorded_at": str(NOW)}
    # The bootstrap's choice for a local publisher (the embedded broker): ingest on the loop.
    app = create_app(deps, FakeVerifier(), ingest=Inline() if local else None)
    with TestClient(app) as client:
        answer = client.post("/v1/telemetry", json={"pings": [ping]}, headers=DRIVER)
    assert answer.json() == {"accepted": 1, "rejected": []}
    assert threads[0].startswith("telemetry") is not local


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        (b'{"pings": [', 400, "body"),
        (b'{"pings": []}', 422, "body.pings"),
        (b'{"pings": "no"}', 422, "body.pings"),
        (b'{"pings": null}', 422, "body.pings"),
        (b'{"pings": {"0": {}}}', 422, "body.pings"),
        (b'{"pngs": []}', 422, "body.pings"),
        (b"[]", 422, "body"),
    ],
)
def test_a_body_that_is_not_a_telemetry_batch_is_refused_whole(
    client: TestClient, publisher: FakePublisher, body: bytes, status: int, where: str
) -> None:
    response = client.post(
        "/v1/telemetry", content=body, headers={**DRIVER, "Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert where in [e["location"] for e in response.json()["errors"]]
    assert publisher.published == []


def test_each_element_of_a_batch_is_judged_on_its_own_objects_or_not(
    client: TestClient, store: FakeDocumentStore, publisher: FakePublisher
) -> None:
    carrying(store, "drv-7", "veh-3")
    elements = [ping(), "not a ping", 42, None, [ping()], {**ping(), "position": None}]
    response = client.post("/v1/telemetry", json={"pings": elements}, headers=DRIVER)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    # The answer for a non-object is the one a bad object gets: its index and why.
    assert [set(r) for r in body["rejected"]] == [{"index", "error"}] * 5
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4, 5]
    assert all(r["error"] == "ping: not a JSON object" for r in body["rejected"][:4])
    assert body["rejected"][4]["error"].startswith("position: ")
    assert [topic for topic, _ in publisher.published] == ["vehicle.telemetry"]


def published_times(publisher: FakePublisher) -> list[datetime]:
    return [CODEC.from_message(m.data, m.attributes).recorded_at for _, m in publisher.published]


def test_a_ping_from_the_future_or_too_old_is_refused_with_its_reason(
    client: TestClient, store: FakeDocumentStore, publisher: FakePublisher
) -> None:
    carrying(store, "drv-7", "veh-3")
    india = timezone(timedelta(hours=5, minutes=30))
    pings = [
        ping(at=NOW + timedelta(days=365)),  # a phone whose clock is a year ahead
        ping(at=NOW + timedelta(minutes=4)),  # within the clock skew allowed (5 minutes)
        ping(at=(NOW + timedelta(minutes=6)).astimezone(india)),
        ping(at=NOW - timedelta(hours=23)),  # a phone that was offline all day
        ping(at=NOW - timedelta(hours=25)),
    ]
    response = client.post("/v1/telemetry", json={"pings": pings}, headers=DRIVER)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [0, 2, 4]
    future, skewed, old = (r["error"] for r in body["rejected"])
    assert future.startswith("recorded_at: ") and "ahead of the server's clock" in future
    assert "more than 300 s" in future and "more than 300 s" in skewed
    assert old.startswith("recorded_at: ") and "older than 86400 s" in old
    assert published_times(publisher) == [NOW + timedelta(minutes=4), NOW - timedelta(hours=23)]
    # A real ping after the refused one from the future is current, not stale: nothing of the
    # future ping was published for the map or the geofence job to compare against.
    assert max(published_times(publisher)) < NOW + timedelta(minutes=5)


def test_the_clock_skew_and_the_age_a_ping_may_have_are_configurable(
    store: FakeDocumentStore, publisher: FakePublisher
) -> None:
    carrying(store, "drv-7", "veh-3")
    window = PingWindow(max_skew=timedelta(seconds=10), max_age=timedelta(minutes=1))
    deps = Deps(store=store, publisher=publisher, codec=CODEC, clock=lambda: NOW)
    deps = dataclasses.replace(deps, ping_window=window)
    at = [NOW + timedelta(seconds=30), NOW + timedelta(seconds=5), NOW - timedelta(minutes=2)]
    client = TestClient(create_app(deps, FakeVerifier()))
    body = client.post("/v1/telemetry", json={"pings": [ping(at=t) for t in at]}, headers=DRIVER)
    assert [r["index"] for r in body.json()["rejected"]] == [0, 2]
    assert "more than 10 s" in body.json()["rejected"][0]["error"]
    assert published_times(publisher) == [NOW + timedelta(seconds=5)]

    settings = Settings.from_env(
        {"MERIDIAN_TELEMETRY_MAX_SKEW_S": "30", "MERIDIAN_TELEMETRY_MAX_AGE_S": "3600"}
    )
    assert (settings.telemetry_max_skew_s, settings.telemetry_max_age_s) == (30.0, 3600.0)
    assert (Settings().telemetry_max_skew_s, Settings().telemetry_max_age_s) == (300.0, 86400.0)
    skew, age = settings.telemetry_max_skew_s, settings.telemetry_max_age_s
    assert PingWindow.of_seconds(skew, age) == PingWindow(timedelta(seconds=30), timedelta(hours=1))
    default = Settings()
    assert PingWindow.of_seconds(default.telemetry_max_skew_s, default.telemetry_max_age_s) == (
        PingWindow()
    )
    with pytest.raises(ConfigError, match=r"^MERIDIAN_TELEMETRY_MAX_SKEW_S must be"):
        Settings.from_env({"MERIDIAN_TELEMETRY_MAX_SKEW_S": "5 minutes"})


class CountingStore(FakeDocumentStore):
    """Counts the reads telemetry makes."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock=clock)
        self.reads = 0

    def get(self, path: str) -> Document | None:
        self.reads += 1
        return super().get(path)

    def get_all(self, paths: Sequence[str]) -> dict[str, Document | None]:
        self.reads += 1  # one batched read (Firestore's get_all), whatever its length
        return {path: super(CountingStore, self).get(path) for path in paths}

    def query(self, query: Query) -> list[Document]:
        self.reads += 1
        return super().query(query)


def test_a_driver_may_report_only_the_vehicle_they_are_assigned(
    client: TestClient, store: FakeDocumentStore, publisher: FakePublisher
) -> None:
    out_for_delivery(client)  # drv-7 drives veh-3 (the desk's :assign)
    refused = REFUSED["not your vehicle"]
    other = {"Authorization": "Bearer driver:drv-8"}
    spoofed = client.post("/v1/telemetry", json={"pings": [ping("veh-3")]}, headers=other)
    assert spoofed.status_code == 202
    assert spoofed.json() == {
        "accepted": 0,
        "rejected": [{"index": 0, "error": "vehicle_id: not your vehicle (drv-8 drives none)"}],
    }
    assert publisher.published == []
    assert REFUSED["not your vehicle"] == refused + 1  # counted, for the refusals metric

    own = client.post(
        "/v1/telemetry", json={"pings": [ping("veh-3"), ping("veh-9")]}, headers=DRIVER
    )
    assert own.json() == {
        "accepted": 1,
        "rejected": [{"index": 1, "error": "vehicle_id: not your vehicle (drv-7 drives veh-3)"}],
    }
    assert REFUSED["not your vehicle"] == refused + 2
    # The dispatch desk and a trusted fleet gateway may report any vehicle, for its driver.
    for headers in (DISPATCHER, GATEWAY):
        pings = [ping("veh-3", driver_id="drv-7"), ping("veh-9")]
        answer = client.post("/v1/telemetry", json={"pings": pings}, headers=headers)
        assert answer.json() == {"accepted": 2, "rejected": []}
    events = [CODEC.from_message(m.data, m.attributes) for _, m in publisher.published]
    assert [(e.vehicle_id, e.driver_id) for e in events] == [
        ("veh-3", "drv-7"),
        ("veh-3", "drv-7"),
        (
            "veh-9",
            None,
        ),
        ("veh-3", "drv-7"),
        ("veh-9", None),
    ]


def test_the_moves_that_put_a_driver_on_a_vehicle_record_its_assignment(
    client: TestClient, store: FakeDocumentStore
) -> None:
    out_for_delivery(client)  # the desk assigns p-1 to drv-7 on veh-3; drv-7 sends it out
    assignment = store.docs["vehicle_assignments/veh-3"].data
    assert (assignment["driver_id"], assignment["since"]) == ("drv-7", NOW)
    assert assignment["assigned_by"] == {
        "name": "AssignParcel",
        "by": "dsp-1",
        "role": "dispatcher",
    }
    # Sending out names a vehicle, but the assignment is the one the desk made: a driver cannot
    # claim another vehicle by naming it.
    client.post("/v1/shipments", json={"parcels": [parcel_body("p-2")]}, headers=CLIENT)
    assign = {"route_id": "r-2", "driver_id": "drv-7", "vehicle_id": "veh-3"}
    client.post("/v1/parcels/p-2:assign", json=assign, headers=DISPATCHER)
    out = {"vehicle_id": "veh-0", "at": NOW.isoformat()}
    client.post("/v1/parcels/p-2:out-for-delivery", json=out, headers=DRIVER)
    assert "vehicle_assignments/veh-0" not in store.docs
    # The desk gives veh-3 to another driver: the assignment follows.
    client.post("/v1/shipments", json={"parcels": [parcel_body("p-3")]}, headers=CLIENT)
    assign = {"route_id": "r-3", "driver_id": "drv-8", "vehicle_id": "veh-3"}
    assert client.post("/v1/parcels/p-3:assign", json=assign, headers=DISPATCHER).status_code == 202
    assert store.docs["vehicle_assignments/veh-3"].data["driver_id"] == "drv-8"
    refused = client.post("/v1/telemetry", json={"pings": [ping("veh-3")]}, headers=DRIVER)
    assert refused.json()["rejected"][0]["error"].startswith("vehicle_id: not your vehicle")


def test_a_driver_is_checked_with_one_read_a_batch_at_most_and_follows_reassignment(
    publisher: FakePublisher,
) -> None:
    now = [NOW]
    store = CountingStore(clock=lambda: now[0])
    carrying(store, "drv-7", "veh-3")
    deps = Deps(store=store, publisher=publisher, codec=CODEC, clock=lambda: now[0])
    client = TestClient(create_app(deps, FakeVerifier()))

    def post(*vehicles: str) -> dict[str, Any]:
        pings = [ping(v, at=now[0] - timedelta(seconds=i)) for i, v in enumerate(vehicles)]
        return dict(client.post("/v1/telemetry", json={"pings": pings}, headers=DRIVER).json())

    assert post(*["veh-3"] * 100)["accepted"] == 100
    assert store.reads == 1  # one read for the batch, never one per ping
    now[0] += timedelta(seconds=5)
    assert post(*["veh-3"] * 100)["accepted"] == 100
    assert store.reads == 1  # the driver's vehicle is known for a while
    # Reassigned: the next batch for the new vehicle reads again and is accepted; the old
    # vehicle is refused from the next read on.
    store.delete("parcels/p-drv-7-veh-3")
    carrying(store, "drv-9", "veh-3")
    carrying(store, "drv-7", "veh-4")
    now[0] += timedelta(seconds=5)
    assert post("veh-4")["accepted"] == 1
    assert store.reads == 2
    assert post("veh-3", "veh-3")["rejected"][1]["error"] == (
        "vehicle_id: not your vehicle (drv-7 drives veh-4)"
    )
    assert store.reads == 2  # refused from what was just read; a spoofer cannot force reads
    now[0] += timedelta(minutes=1)
    assert post("veh-4")["accepted"] == 1
    assert store.reads == 3  # what was read is trusted for a short while only


def test_a_parcel_move_refuses_a_bad_parcel_id_and_a_long_idempotency_key(
    client: TestClient,
) -> None:
    body = {
        "vehicle_id": "veh-1",
        "delivered_at": NOW.isoformat(),
        "position": {"lat": 1, "lng": 2},
    }
    bad_id = client.post("/v1/parcels/-p:deliver", json=body, headers=DRIVER)
    assert bad_id.status_code == 422
    assert [e["location"] for e in bad_id.json()["errors"]] == ["path.parcel_id"]
    long_key = client.post(
        "/v1/parcels/p-1:deliver", json=body, headers={**DRIVER, "Idempotency-Key": "k" * 256}
    )
    assert long_key.status_code == 422
    assert [e["location"] for e in long_key.json()["errors"]] == ["header.idempotency-key"]


def test_the_parcel_moves_are_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/parcels/{parcel_id}:deliver"][
        "post"
    ]
    parameters = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert parameters == {("path", "parcel_id"), ("header", "Idempotency-Key")}
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"vehicle_id", "delivered_at", "position"} <= set(schema["required"])
    assert "$ref" not in str(schema)


def test_the_telemetry_body_is_documented(client: TestClient) -> None:
    body = client.get("/openapi.json").json()["paths"]["/v1/telemetry"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["pings"]
    assert schema["properties"]["pings"]["maxItems"] == 500


def test_openapi_documents_the_commands(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/shipments", "/v1/parcels/{parcel_id}:deliver", "/v1/telemetry"} <= set(paths)


@pytest.mark.parametrize("exported", [False, True])
def test_published_pings_continue_the_callers_trace(
    client: TestClient,
    store: FakeDocumentStore,
    publisher: FakePublisher,
    monkeypatch: pytest.MonkeyPatch,
    exported: bool,
) -> None:
    carrying(store, "drv-7", "veh-3")
    # Whether or not spans are exported, the driver app's trace reaches the telemetry topic.
    sampler = configure_tracing("command").sampler
    assert isinstance(sampler, observability.RecordWhenExported)
    monkeypatch.setattr(sampler, "exporting", exported)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    ping = {"vehicle_id": "veh-3", "position": {"lat": 1, "lng": 2}, "recorded_at": NOW.isoformat()}
    response = client.post(
        "/v1/telemetry",
        json={"pings": [ping]},
        headers={**DRIVER, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert response.status_code == 202
    traceparent = publisher.published[0][1].attributes["traceparent"]
    assert traceparent.split("-")[1] == trace_id
    assert traceparent.split("-")[2] != "00f067aa0ba902b7"  # the command service's own span


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.2:99999/hook", "port 99999 is out of range"),
        ("http://[::1/hook", "no closing ']'"),
        ("http://user:pw@hooks.example.com/", "credentials"),
    ],
)
def test_a_malformed_webhook_url_is_a_422_problem_naming_it_never_a_500(
    client: TestClient, url: str, problem: str
) -> None:
    # Issue #25: urllib's ValueErrors escaped registration as 500s.
    response = client.post(
        "/v1/clients/c-freshmart/webhooks", json={"url": url, "event_types": []}, headers=CLIENT
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert problem in response.json()["detail"]


@pytest.mark.parametrize("url", [42, None, ["http://hooks.example.com/"], {"href": "x"}, True])
def test_a_webhook_url_that_is_not_a_string_is_a_422_problem(client: TestClient, url: Any) -> None:
    response = client.post(
        "/v1/clients/c-freshmart/webhooks", json={"url": url, "event_types": []}, headers=CLIENT
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["location"] for e in response.json()["errors"]] == ["body.url"]
