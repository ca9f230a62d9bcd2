"""The fleet routes (#22 item 1) through the command service's ASGI app: 201 with Location, pages,
merges, 204; dispatchers only (401 anonymous, 403 drivers and client systems); problem+json
errors; Idempotency-Key on POST and PATCH; the OpenAPI document; geofence bodies within their
limit."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian.app.auth import api_key_digest
from services.command.app import BODY_LIMITS, create_app
from services.command.handlers import Deps
from services.command.handlers.fleet import MAX_FENCE_VERTICES
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.unit.test_command_service import CODEC, NOW, FakeVerifier

DISPATCHER = {"Authorization": "Bearer dispatcher:dsp-1"}
DRIVER = {"Authorization": "Bearer driver:drv-7"}
CLIENT = {"X-API-Key": "key-freshmart"}
SQUARE = [[77.59, 12.97], [77.60, 12.97], [77.60, 12.98], [77.59, 12.98], [77.59, 12.97]]
BODIES: dict[str, dict[str, Any]] = {
    "drivers": {"driver_id": "drv-1", "name": "Asha", "phone": "+919800000001"},
    "vehicles": {
        "vehicle_id": "veh-1",
        "capacity_kg": 500,
        "capacity_parcels": 40,
        "depot": {"lat": 12.97, "lng": 77.59},
        "shift": {"start": "06:00", "end": "14:00"},
    },
    "geofences": {
        "fence_id": "depot-a",
        "name": "Depot A",
        "geometry": {"type": "Polygon", "coordinates": [SQUARE]},
        "margin_m": 20,
    },
}
ID_FIELD = {"drivers": "driver_id", "vehicles": "vehicle_id", "geofences": "fence_id"}


@pytest.fixture
def store() -> FakeDocumentStore:
    store = FakeDocumentStore(clock=lambda: NOW)
    store.create(
        f"api_keys/{api_key_digest('key-freshmart')}", {"client_id": "c-1", "active": True}
    )
    return store


@pytest.fixture
def client(store: FakeDocumentStore) -> TestClient:
    deps = Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW)
    return TestClient(create_app(deps, FakeVerifier()))


@pytest.mark.parametrize("plural", BODIES)
def test_a_record_lives_from_post_to_delete(client: TestClient, plural: str) -> None:
    body = BODIES[plural]
    item_id = body[ID_FIELD[plural]]
    created = client.post(f"/v1/{plural}", json=body, headers=DISPATCHER)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/v1/{plural}/{item_id}"
    assert {k: v for k, v in created.json().items() if k in body} == body
    assert client.get(f"/v1/{plural}/{item_id}", headers=DISPATCHER).json() == created.json()
    page = client.get(f"/v1/{plural}", headers=DISPATCHER).json()
    assert page == {plural: [created.json()], "next_after": None}
    changed = client.patch(
        f"/v1/{plural}/{item_id}",
        json={"name": "Renamed"} if plural != "vehicles" else {"capacity_parcels": 30},
        headers=DISPATCHER,
    )
    assert changed.status_code == 200, changed.text
    assert client.delete(f"/v1/{plural}/{item_id}", headers=DISPATCHER).status_code == 204
    gone = client.get(f"/v1/{plural}/{item_id}", headers=DISPATCHER)
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("plural", BODIES)
def test_only_dispatchers_may(client: TestClient, plural: str) -> None:
    body = BODIES[plural]
    item = f"/v1/{plural}/{body[ID_FIELD[plural]]}"
    for headers, status in ((DRIVER, 403), (CLIENT, 403), ({}, 401)):
        for method, path, payload in (
            ("POST", f"/v1/{plural}", body),
            ("GET", f"/v1/{plural}", None),
            ("GET", item, None),
            ("PATCH", item, {}),
            ("DELETE", item, None),
        ):
            answer = client.request(method, path, json=payload, headers=headers)
            assert answer.status_code == status, (method, path, headers, answer.text)
            assert answer.json()["status"] == status


def test_a_retried_post_gets_the_first_answer(client: TestClient) -> None:
    headers = {**DISPATCHER, "Idempotency-Key": "k-1"}
    first = client.post("/v1/drivers", json=BODIES["drivers"], headers=headers)
    again = client.post("/v1/drivers", json=BODIES["drivers"], headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    other = client.post("/v1/drivers", json={**BODIES["drivers"], "name": "B"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    duplicate = client.post("/v1/drivers", json=BODIES["drivers"], headers=DISPATCHER)
    assert duplicate.status_code == 409
    assert duplicate.json()["type"].endswith("/already-exists")


def test_a_retried_patch_gets_the_first_answer(
    client: TestClient, store: FakeDocumentStore
) -> None:
    client.post("/v1/drivers", json=BODIES["drivers"], headers=DISPATCHER)
    headers = {**DISPATCHER, "Idempotency-Key": "k-2"}
    first = client.patch("/v1/drivers/drv-1", json={"status": "OFF_DUTY"}, headers=headers)
    store.update("drivers/drv-1", {"status": "AVAILABLE"})  # changed meanwhile by someone else
    again = client.patch("/v1/drivers/drv-1", json={"status": "OFF_DUTY"}, headers=headers)
    assert again.json() == first.json()
    assert store.get("drivers/drv-1").data["status"] == "AVAILABLE"  # type: ignore[union-attr]


def test_a_broken_polygon_is_a_problem_naming_each_fault(client: TestClient) -> None:
    open_ring = {
        **BODIES["geofences"],
        "geometry": {"type": "Polygon", "coordinates": [SQUARE[:-1]]},
    }
    answer = client.post("/v1/geofences", json=open_ring, headers=DISPATCHER)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["errors"] == [
        {
            "location": "geometry.coordinates.0",
            "message": "a ring is closed: its last position is its first",
        }
    ]
    point = {**BODIES["geofences"], "geometry": {"type": "Point", "coordinates": [77.5, 12.9]}}
    assert client.post("/v1/geofences", json=point, headers=DISPATCHER).status_code == 422


def test_what_is_not_the_desks_is_refused(client: TestClient, store: FakeDocumentStore) -> None:
    client.post("/v1/vehicles", json=BODIES["vehicles"], headers=DISPATCHER)
    for change in (
        {"status": "ON_ROUTE"},
        {"capacity_kg": None},
        {"shift": {"start": "06:00", "end": "06:00"}},
    ):
        answer = client.patch("/v1/vehicles/veh-1", json=change, headers=DISPATCHER)
        assert answer.status_code == 422, (change, answer.text)
    cleared = client.patch("/v1/vehicles/veh-1", json={"shift": None}, headers=DISPATCHER)
    assert cleared.status_code == 200 and cleared.json()["shift"] is None
    store.update("vehicles/veh-1", {"status": "RESERVED", "window_id": "w-1"})
    held = client.delete("/v1/vehicles/veh-1", headers=DISPATCHER)
    assert held.status_code == 409 and "w-1" in held.json()["detail"]


def test_the_openapi_document_declares_the_routes(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for plural in BODIES:
        post = document["paths"][f"/v1/{plural}"]["post"]
        patch = document["paths"][f"/v1/{plural}/{{item_id}}"]["patch"]
        for operation in (post, patch):
            assert "idempotency-key" in [p["name"].lower() for p in operation["parameters"]]
        assert {"201", "401", "403", "409", "422"} <= set(post["responses"])
        assert post["responses"]["403"]["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }
        assert "Location" in post["responses"]["201"]["headers"]
        assert {"204", "404", "409"} <= set(
            document["paths"][f"/v1/{plural}/{{item_id}}"]["delete"]["responses"]
        )


def test_the_largest_valid_geofence_fits_its_limit(client: TestClient) -> None:
    # MAX_FENCE_VERTICES positions on a small circle west and south of Greenwich, so every
    # coordinate prints at its longest (a sign, three digits, a fraction to 17 figures), indented
    n = MAX_FENCE_VERTICES - 1
    ring = [
        [
            -122.41 + 0.01 * math.cos(2 * math.pi * i / n),
            -37.77 + 0.01 * math.sin(2 * math.pi * i / n),
        ]
        for i in range(n)
    ]
    body = json.dumps(
        {
            **BODIES["geofences"],
            "name": "N" * 200,
            "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        },
        indent=4,
    ).encode()
    assert len(body) <= BODY_LIMITS.limit_of("POST", "/v1/geofences")
    answer = client.post(
        "/v1/geofences", content=body, headers={**DISPATCHER, "content-type": "application/json"}
    )
    assert answer.status_code == 201, answer.text[:500]
    assert BODY_LIMITS.limit_of("PATCH", "/v1/geofences/depot-a") == BODY_LIMITS.limit_of(
        "POST", "/v1/geofences"
    )


def test_a_retried_geofence_post_gets_the_first_answer(client: TestClient) -> None:
    # the ledger keeps the answer as a document, which cannot hold GeoJSON's nested arrays
    headers = {**DISPATCHER, "Idempotency-Key": "k-3"}
    first = client.post("/v1/geofences", json=BODIES["geofences"], headers=headers)
    again = client.post("/v1/geofences", json=BODIES["geofences"], headers=headers)
    assert (first.status_code, again.status_code) == (201, 201), first.text
    assert again.json() == first.json()
    assert again.json()["geometry"] == BODIES["geofences"]["geometry"]
