"""Every service's ``/metrics`` (#22 item 4), read through the ASGI app with Prometheus' own text
parser: the series of a route, of a push and of a business counter move after a request.

``counter`` reads one business counter from the registry, for the handlers' tests (the event
publisher's, the reactors', the webhook worker's) to assert it moves once per effect."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response

from meridian import metrics
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain import events as ev
from meridian.domain.errors import Unavailable
from meridian.edge.fast_routes import PlainRequest, PlainResponse, PlainRoutes
from meridian.edge.push import reactor_app
from meridian.edge.push_auth import VerifiedPush
from meridian.embedded.oidc import PushTokenVerifier, TokenIssuer, load_jwks
from meridian.embedded.pubsub.push import envelope
from meridian.ports import ReceivedMessage

URL = "http://127.0.0.1:9999"
SA = Settings(project="meridian-local").push_identity
CODEC = EventCodec(load_catalog())


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) => value, parsed by prometheus_client's parser."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def counter(name: str, **labels: str) -> float:
    """A counter's value now, from the process' registry (0 before its first count)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _app() -> PlainRoutes:
    app = PlainRoutes()

    async def echo(request: PlainRequest) -> PlainResponse:
        return PlainResponse(200 if request.body != b"boom" else 503, request.body)

    app.plain_route("POST", "/test-metrics/echo", echo)
    router = APIRouter()

    @router.post("/test-metrics/parcels/{parcel_id}:deliver")
    async def deliver(request: Request) -> Response:
        if request.path_params["parcel_id"] == "bad":
            raise RuntimeError("a bug")
        return Response(status_code=202)

    app.include_direct(router)

    @app.get("/test-metrics/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    return app


def test_requests_are_counted_and_timed_per_route_template_on_every_path() -> None:
    client = TestClient(_app(), raise_server_exceptions=False)
    before = scrape(client)
    assert client.post("/test-metrics/echo", content=b"x").status_code == 200
    assert client.post("/test-metrics/echo", content=b"boom").status_code == 503
    assert client.post("/test-metrics/parcels/p-1:deliver").status_code == 202
    assert client.post("/test-metrics/parcels/p-2:deliver").status_code == 202
    assert client.post("/test-metrics/parcels/bad:deliver").status_code == 500
    assert client.get("/test-metrics/things/a").status_code == 200
    assert client.get("/test-metrics/nowhere").status_code == 404
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    echo = {"method": "POST", "route": "/test-metrics/echo"}
    assert moved("meridian_http_requests_total", **echo, status="2xx") == 1
    assert moved("meridian_http_requests_total", **echo, status="5xx") == 1
    assert moved("meridian_http_request_errors_total", **echo) == 1
    assert moved("meridian_http_request_duration_seconds_count", **echo) == 2
    deliver = {"method": "POST", "route": "/test-metrics/parcels/{parcel_id}:deliver"}
    assert moved("meridian_http_requests_total", **deliver, status="2xx") == 2
    assert moved("meridian_http_request_errors_total", **deliver) == 1
    assert moved("meridian_http_request_duration_seconds_count", **deliver) == 3
    assert moved("meridian_http_request_duration_seconds_sum", **deliver) > 0
    things = {"method": "GET", "route": "/test-metrics/things/{thing}"}
    assert moved("meridian_http_requests_total", **things, status="2xx") == 1
    unmatched = {"method": "GET", "route": "unmatched"}
    assert moved("meridian_http_requests_total", **unmatched, status="4xx") == 1


def test_pushes_are_counted_per_subscription_and_outcome(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)
    auth = VerifiedPush(PushTokenVerifier(load_jwks(tmp_path)), frozenset({SA}))

    def handle(event: ev.DomainEvent) -> None:
        if event.event_id.startswith("flaky"):
            raise Unavailable("downstream down")

    client = TestClient(reactor_app("test", handle, auth, CODEC, URL))
    token = issuer.token(f"{URL}/events", SA)
    before = scrape(client)
    for event_id in ("ok-1", "ok-2", "flaky-1"):
        event = ev.ShipmentCreated(
            event_id=event_id,
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            shipment_id="s-1",
            client_id="c-1",
            parcel_ids=("p",),
        )
        received = ReceivedMessage("ack", "m-1", CODEC.to_message(event), datetime.now(UTC), 1)
        body = json.dumps(envelope(received, "test-metrics-sub", "meridian-local", True))
        client.post("/events", content=body, headers={"Authorization": f"Bearer {token}"})
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sub = {"subscription": "test-metrics-sub"}
    assert moved("meridian_push_messages_total", **sub, outcome="acked") == 2
    assert moved("meridian_push_messages_total", **sub, outcome="nacked") == 1
    assert moved("meridian_push_duration_seconds_count", **sub) == 2
    assert moved("meridian_event_lag_seconds_count", **sub) == 2
    assert moved("meridian_event_lag_seconds_bucket", **sub, le="+Inf") == 2
    events = {"method": "POST", "route": "/events"}
    assert moved("meridian_http_requests_total", **events, status="2xx") == 2
    assert moved("meridian_http_requests_total", **events, status="5xx") == 1


def test_business_counters_move_when_called() -> None:
    client = TestClient(PlainRoutes())
    before = scrape(client)
    metrics.parcel_delivered()
    metrics.delivery_failed()
    metrics.sla_breached(2)
    metrics.webhook_sent()
    metrics.webhook_failed()
    metrics.sms_sent(3)
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("meridian_deliveries_total") == 1
    assert moved("meridian_delivery_failures_total") == 1
    assert moved("meridian_sla_breaches_total") == 2
    assert moved("meridian_webhooks_total", outcome="sent") == 1
    assert moved("meridian_webhooks_total", outcome="failed") == 1
    assert moved("meridian_sms_sent_total") == 3


def test_the_instrument_costs_little_beside_a_request() -> None:
    """The cost the instrument adds to a plain route, interleaved on and off, CPU time: a few
    microseconds (the module docstring's figure); bounded loosely here, a shared machine."""
    app = PlainRoutes()

    async def ok(request: PlainRequest) -> PlainResponse:
        return PlainResponse(204)

    app.plain_route("POST", "/test-metrics/cost", ok)
    measured = metrics.route_metrics("POST", "/test-metrics/cost")
    rounds, per_round = 5, 2000
    spent = 0.0
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(per_round):
            measured.observe(204, 0.001)
        spent += time.process_time() - started
    per_request_us = spent / (rounds * per_round) * 1e6
    assert per_request_us < 20, per_request_us
