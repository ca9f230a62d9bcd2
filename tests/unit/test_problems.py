"""The API's conventions (#23 item 3), on the command service over fakes: every operation declares
its error answers as problem+json with the ``Problem`` schema (hot routes included, FastAPI's
``HTTPValidationError`` nowhere), a 405 names the methods its path takes (``Allow``), a 202 points
at the status resource (``Location``) where there is one, and a 503 says when to retry."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian.edge.problems import PROBLEM_JSON, RETRY_AFTER_S, problem
from services.command.app import create_app
from services.command.handlers import Deps
from tests.fakes import FakeDocumentStore, FakePublisher, FakeWorkflows
from tests.unit.test_command_service import (
    CLIENT,
    CODEC,
    DISPATCHER,
    DRIVER,
    NOW,
    FakeVerifier,
    deliver_body,
    out_for_delivery,
    parcel_body,
)
from tests.unit.test_command_service import store as store  # a fixture
from tests.unit.test_dispatch_commands import WINDOW

PROBLEM = {"$ref": "#/components/schemas/Problem"}
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def client(store: FakeDocumentStore) -> TestClient:
    deps = Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW)
    return TestClient(create_app(deps, FakeVerifier(), FakeWorkflows(NOW)))


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_every_operation_declares_its_errors_as_problems(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(document)
    schema = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(schema["properties"])
    assert set(schema["required"]) == {"type", "title", "status", "detail"}
    found = operations(document)
    assert len(found) >= 18
    for name, operation in found.items():
        responses = operation["responses"]
        for status in ("401", "403", "422"):
            assert status in responses, f"{name} declares no {status}"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert response["content"] == {PROBLEM_JSON: {"schema": PROBLEM}}, (name, status)
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        assert responses["503"]["headers"]["Retry-After"]["required"] is True


def test_the_hot_routes_declare_what_they_answer(client: TestClient) -> None:
    found = operations(client.get("/openapi.json").json())
    deliver = found["POST /v1/parcels/{parcel_id}:deliver"]["responses"]
    assert {"202", "400", "401", "403", "404", "409", "413", "422", "503"} <= set(deliver)
    assert deliver["202"]["headers"]["Location"]["required"] is True
    telemetry = found["POST /v1/telemetry"]["responses"]
    assert {"202", "400", "401", "403", "413", "422", "503"} <= set(telemetry)
    assert "Location" not in telemetry["202"].get("headers", {})  # no status resource
    pod = found["PUT /v1/parcels/{parcel_id}/pod-image"]["responses"]
    assert {"404", "413", "415"} <= set(pod)
    for name in ("POST /v1/shipments", "POST /v1/dispatch-windows"):
        assert found[name]["responses"]["202"]["headers"]["Location"]["required"] is True


def test_a_405_names_the_methods_its_path_takes(client: TestClient) -> None:
    answer = client.delete("/v1/clients/c-freshmart/webhooks", headers=CLIENT)
    assert answer.status_code == 405
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.headers["allow"] == "GET, POST"  # two routes share the path
    telemetry = client.get("/v1/telemetry", headers=DRIVER)
    assert telemetry.status_code == 405 and telemetry.headers["allow"] == "POST"
    # The move's resource takes POST only, though a GET of this path reads parcel "p-1:deliver".
    move = client.put("/v1/parcels/p-1:deliver", headers=DRIVER)
    assert move.status_code == 405 and move.headers["allow"] == "POST"


def test_a_202_points_at_the_status_resource(client: TestClient) -> None:
    shipment = client.post(
        "/v1/shipments",
        json={"shipment_id": "s-9", "parcels": [parcel_body("p-9")]},
        headers=CLIENT,
    )
    assert shipment.status_code == 202
    assert shipment.headers["location"] == "/v1/shipments/s-9"
    assert client.get(shipment.headers["location"], headers=CLIENT).status_code == 200

    out_for_delivery(client, "p-1")
    # A retry with the same key gets the first answer, its Location too.
    delivered = [
        client.post(
            "/v1/parcels/p-1:deliver",
            json=deliver_body(),
            headers={**DRIVER, "Idempotency-Key": "k-1"},
        )
        for _ in range(2)
    ]
    assert [d.status_code for d in delivered] == [202, 202]
    assert [d.headers["location"] for d in delivered] == ["/v1/parcels/p-1"] * 2
    status = client.get(delivered[0].headers["location"], headers=CLIENT)
    assert status.json()["status"] == "DELIVERED"

    window = client.post("/v1/dispatch-windows", json=WINDOW, headers=DISPATCHER)
    assert window.status_code == 202
    assert window.headers["location"] == "/v1/dispatch-windows/w-1"


def test_a_503_says_when_to_retry(store: FakeDocumentStore) -> None:
    deps = Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW)
    client = TestClient(create_app(deps, FakeVerifier()))  # no Workflows adapter: unavailable
    answer = client.post("/v1/dispatch-windows", json=WINDOW, headers=DISPATCHER)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == str(RETRY_AFTER_S)
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert problem(401, "unauthenticated", "no").headers["www-authenticate"] == "Bearer"
