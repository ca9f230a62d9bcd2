"""Schemathesis over the command service's OpenAPI: whatever a client sends, never a 5xx, and every
answer is what the document declares (#23 item 3): a documented status, its content type, its
schema (the ``Problem`` schema for errors) and its required headers (``Location`` on a 202 that
has a status resource, ``WWW-Authenticate`` on a 401, ``Retry-After`` on a 503).

Runs in-process against the ASGI app with fakes of the ports, with credentials that may call each
route on every request, so generated bodies reach the handlers rather than stopping at
authentication: drivers and dispatchers a bearer token, client systems an API key, on their own
client id. Webhook URLs are checked against a resolver that answers without the network (every
name one public address), as tests/unit/test_webhooks.py does.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from meridian.app.auth import api_key_digest
from meridian.observability import configure_tracing
from services.command.app import create_app
from services.command.handlers import Deps
from tests.fakes import FakeDocumentStore, FakePublisher, FakeWorkflows
from tests.unit.test_command_service import CODEC, NOW, FakeVerifier, parcel_body

configure_tracing("command")  # as the service runs: the hot routes are served directly
store = FakeDocumentStore(clock=lambda: NOW)
store.create(f"api_keys/{api_key_digest('key-fuzz')}", {"client_id": "c-fuzz", "active": True})
app = create_app(
    Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW),
    FakeVerifier(),
    FakeWorkflows(NOW),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)

# An empty Authorization, which the service reads as none: else the generator adds a bearer
# scheme's of its own, which the service would read first.
CLIENT = {"X-API-Key": "key-fuzz", "Authorization": ""}
DISPATCHER = {"Authorization": "Bearer dispatcher:dsp-1"}
DRIVER = {"Authorization": "Bearer driver:drv-7"}
# A parcel by the id the generator tries first, so moves of it get past 404 and answer 202 (or
# 409, as its state moves on).
seeded = TestClient(app).post(
    "/v1/shipments", json={"shipment_id": "s-0", "parcels": [parcel_body("0")]}, headers=CLIENT
)
assert seeded.status_code == 202, seeded.text
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    allow_header_conformance,
]


def credentials(method: str, path: str) -> dict[str, str]:
    """Who may call ``method path``: client systems their shipments and webhooks, dispatchers
    the desk's moves, dispatch windows and schedules and the fleet, drivers the rest."""
    if path.startswith("/v1/clients/") or path.startswith("/v1/shipments"):
        return CLIENT
    desk = ("/v1/dispatch-windows", "/v1/dispatch-schedules", "/v1/drivers", "/v1/vehicles")
    if ":assign" in path or ":re" in path or path.startswith((*desk, "/v1/geofences")):
        return DISPATCHER
    return DRIVER


def _public_resolver(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    host.encode("idna")  # as the real call checks a name
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port or 443))]


@pytest.fixture(scope="module", autouse=True)
def no_dns() -> Iterator[None]:
    with mock.patch.object(socket, "getaddrinfo", _public_resolver):
        yield


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_what_the_document_declares(case: schemathesis.Case) -> None:
    if "client_id" in (case.path_parameters or {}):
        case.path_parameters = {**(case.path_parameters or {}), "client_id": "c-fuzz"}
    # The generator's own credentials (random ones of both schemes) replaced by the caller's.
    generated = {
        name: value
        for name, value in (case.headers or {}).items()
        if name.lower() not in {"authorization", "x-api-key"}
    }
    headers = {**generated, **credentials(case.method, case.path)}
    response = case.call(headers=headers)
    case.validate_response(response, checks=CHECKS)
