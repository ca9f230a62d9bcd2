"""Schemathesis over the command service's OpenAPI: whatever a client sends, never a 5xx.

Runs in-process against the ASGI app with fakes of the ports, with valid credentials on every
request so generated bodies reach the handlers rather than stopping at authentication.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from meridian.app.auth import api_key_digest
from meridian.observability import configure_tracing
from services.command.app import create_app
from services.command.handlers import Deps
from tests.fakes import FakeDocumentStore, FakePublisher, FakeWorkflows
from tests.unit.test_command_service import CODEC, NOW, FakeVerifier

configure_tracing("command")  # as the service runs: the hot routes are served directly
store = FakeDocumentStore(clock=lambda: NOW)
store.create(f"api_keys/{api_key_digest('key-fuzz')}", {"client_id": "c-fuzz", "active": True})
app = create_app(
    Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW),
    FakeVerifier(),
    FakeWorkflows(NOW),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)

CREDENTIALS = {
    "post /v1/shipments": {"X-API-Key": "key-fuzz"},
    "get /v1/shipments/{shipment_id}": {"X-API-Key": "key-fuzz"},
    "post /v1/telemetry": {"Authorization": "Bearer driver:drv-7"},
}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_command_service_fail(case: schemathesis.Case) -> None:
    key = f"{case.method.lower()} {case.path}"
    default = (
        {"Authorization": "Bearer dispatcher:dsp-1"}
        if ":assign" in key or ":re" in key
        else {"Authorization": "Bearer driver:drv-7"}
    )
    headers = {**(case.headers or {}), **CREDENTIALS.get(key, default)}
    response = case.call(headers=headers)
    case.validate_response(response, checks=[not_a_server_error])
