"""Request bodies have a limit per route (#25): a body over it is answered 413 problem+json before
more than the limit is read, whether it declares its length (refused before a byte is read) or
streams in chunks (refused at the chunk that crosses the limit). The limits are each route's
natural maximum, so the largest valid request of each kind still fits.

Requests are sent straight to each app's ASGI callable with a body that counts what was read of it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.edge.body_limits import KIB, MIB, BodyLimits
from meridian.edge.fast_routes import PlainResponse, PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.ports import IdentityVerifier
from services.command.app import BODY_LIMITS, create_app
from services.command.handlers import Deps
from services.command.handlers.pod import MAX_IMAGE_BYTES
from services.command.handlers.telemetry import MAX_PINGS_PER_BATCH
from tests.fakes import FakeDocumentStore, FakePublisher

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
THIRTY_MB = 30 * 1000 * 1000
CHUNK = 64 * KIB


class Verifier(IdentityVerifier):
    """Tokens are 'role:subject'."""

    def verify(self, token: str) -> Actor:
        role, _, subject = token.partition(":")
        if role not in ("driver", "dispatcher") or not subject:
            raise Unauthenticated("bad token")
        return Actor(subject=subject, role=role)  # type: ignore[arg-type]


DRIVER = {"authorization": "Bearer driver:drv-7"}
DISPATCHER = {"authorization": "Bearer dispatcher:dsp-1"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    read: int  # bytes of the request body the app took

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"].startswith("application/problem+json"), self.headers
        document: dict[str, Any] = json.loads(self.body)
        return document


def send(
    app: Any,
    method: str,
    path: str,
    size: int,
    headers: dict[str, str] | None = None,
    declared: bool = True,
    body: bytes | None = None,
) -> Answer:
    """``method path`` with a body of ``size`` bytes (or ``body``), with a Content-Length when
    ``declared``, else streamed in 64 KiB chunks as a chunked body arrives."""
    content = body
    total = len(body) if body is not None else size
    chunk = b"x" * CHUNK
    read = 0
    sent: list[dict[str, Any]] = []
    head = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if declared:
        head.append((b"content-length", str(total).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": head,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= total:
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}
        part = content[read : read + CHUNK] if content is not None else chunk[: total - read]
        read += len(part)
        return {"type": "http.request", "body": part, "more_body": read < total}

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, collect))
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer_body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], answer_headers, answer_body, read)


@pytest.fixture
def command() -> FastAPI:
    store = FakeDocumentStore(clock=lambda: NOW)
    deps = Deps(
        store=store, publisher=FakePublisher(), codec=EventCodec(load_catalog()), clock=lambda: NOW
    )
    return create_app(deps, Verifier())


COMMAND_ROUTES = [
    ("POST", "/v1/parcels/p-1:deliver", DRIVER),
    ("POST", "/v1/parcels/p-1:assign", DISPATCHER),
    ("POST", "/v1/telemetry", DRIVER),
    ("POST", "/v1/shipments", DISPATCHER),
    ("POST", "/v1/dispatch-windows", DISPATCHER),
    ("POST", "/v1/clients/c-1/webhooks", DISPATCHER),
    ("PUT", "/v1/parcels/p-1/pod-image", {**DRIVER, "content-type": "image/jpeg"}),
]


@pytest.mark.parametrize(("method", "path", "headers"), COMMAND_ROUTES)
def test_a_30_mb_body_that_says_so_is_refused_before_a_byte_is_read(
    command: FastAPI, method: str, path: str, headers: dict[str, str]
) -> None:
    answer = send(command, method, path, THIRTY_MB, headers)
    assert answer.status == 413, answer.body
    assert answer.problem()["status"] == 413
    assert answer.read == 0


@pytest.mark.parametrize(("method", "path", "headers"), COMMAND_ROUTES)
def test_a_30_mb_chunked_body_is_refused_once_past_the_limit(
    command: FastAPI, method: str, path: str, headers: dict[str, str]
) -> None:
    answer = send(command, method, path, THIRTY_MB, headers, declared=False)
    assert answer.status == 413, answer.body
    assert answer.problem()["status"] == 413
    limit = BODY_LIMITS.limit_of(method, path)
    assert answer.read <= limit + CHUNK  # it stopped at the chunk that crossed the limit


def test_an_anonymous_30_mb_body_is_neither_read_nor_judged(command: FastAPI) -> None:
    streamed = send(command, "POST", "/v1/parcels/p-1:deliver", THIRTY_MB, declared=False)
    assert streamed.status == 401 and streamed.read == 0
    declared = send(command, "POST", "/v1/shipments", THIRTY_MB)
    assert declared.status == 413 and declared.read == 0


def test_the_command_routes_limits_are_their_natural_maxima() -> None:
    assert BODY_LIMITS.limit_of("PUT", "/v1/parcels/p-9/pod-image") == MAX_IMAGE_BYTES
    assert BODY_LIMITS.limit_of("POST", "/v1/telemetry") == 512 * KIB
    assert BODY_LIMITS.limit_of("POST", "/v1/shipments") == 4 * MIB
    assert BODY_LIMITS.limit_of("POST", "/v1/parcels/p-9:deliver") == 64 * KIB
    assert BODY_LIMITS.limit_of("POST", "/v1/clients/c-1/webhooks") == 64 * KIB


def _longest_id(prefix: str) -> str:
    return (prefix + "-" + "9" * 128)[:128]


def test_the_largest_valid_telemetry_batch_fits_its_limit(command: FastAPI) -> None:
    ping = {
        "vehicle_id": _longest_id("veh"),
        "driver_id": _longest_id("drv"),
        "position": {"lat": -89.123456789012345, "lng": -179.12345678901234},
        "recorded_at": "2026-11-21T09:00:00.123456+05:30",
        "heading_deg": 359.99999999999994,
        "speed_mps": 89.99999999999999,
        "accuracy_m": 9999.999999999998,
    }
    batch = json.dumps({"pings": [ping] * MAX_PINGS_PER_BATCH}, indent=2).encode()
    assert len(batch) <= BODY_LIMITS.limit_of("POST", "/v1/telemetry")
    answer = send(command, "POST", "/v1/telemetry", 0, DRIVER, body=batch)
    assert answer.status != 413 and answer.read == len(batch)


def test_the_largest_valid_shipment_fits_its_limit(command: FastAPI) -> None:
    start = NOW + timedelta(hours=1)
    parcel = {
        "parcel_id": _longest_id("p"),
        "recipient": {"name": "म" * 200, "phone": "+919812345678901", "email": "e" * 254},
        "stop": {
            "location": {"lat": -89.123456789012345, "lng": -179.12345678901234},
            "address": "म" * 500,
            "window": {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()},
        },
        "weight_kg": 999.9999999999999,
    }
    # JSON's \\u escapes are the longest way to write the recipient's name and address.
    body = json.dumps({"shipment_id": _longest_id("s"), "parcels": [parcel] * 500}, indent=2)
    assert len(body.encode()) <= BODY_LIMITS.limit_of("POST", "/v1/shipments")
    answer = send(command, "POST", "/v1/shipments", 0, DISPATCHER, body=body.encode())
    assert answer.status != 413 and answer.read == len(body.encode())


def test_a_pod_photo_at_its_limit_is_read_whole(command: FastAPI) -> None:
    photo = b"\xff\xd8\xff" + b"\x00" * (MAX_IMAGE_BYTES - 3)
    headers = {**DRIVER, "content-type": "image/jpeg"}
    answer = send(command, "PUT", "/v1/parcels/p-1/pod-image", 0, headers, body=photo)
    assert answer.status != 413 and answer.read == len(photo)


# Every other service: one mechanism, each with its own table -------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("limits")
    return Settings(data_dir=data_dir)


def _dispatch(settings: Settings) -> FastAPI:
    from services.dispatch.app import create_app as dispatch_app
    from services.dispatch.bootstrap import bootstrap

    return dispatch_app(*bootstrap(settings))


def _live_map(settings: Settings) -> FastAPI:
    from services.live_map.app import create_app as live_map_app
    from services.live_map.bootstrap import MapOptions, bootstrap

    return live_map_app(bootstrap(settings, MapOptions(role="streams")))


def _event_publisher(settings: Settings) -> FastAPI:
    from services.event_publisher.app import create_app as publisher_app
    from services.event_publisher.bootstrap import bootstrap

    return publisher_app(*bootstrap(settings))


def _reactor(settings: Settings) -> FastAPI:
    from services.reactors.billing.app import create_app as billing_app

    return billing_app(settings)


@pytest.mark.parametrize(
    ("build", "method", "path", "limit"),
    [
        (_dispatch, "POST", "/v1/steps/offer_routes", 1 * MIB),
        (_live_map, "GET", "/v1/fleet/stream", 64 * KIB),
        (_event_publisher, "POST", "/firestore", 4 * MIB),
        (_reactor, "POST", "/events", 16 * MIB),
    ],
    ids=["dispatch", "live-map", "event-publisher", "reactor-push"],
)
def test_every_service_refuses_a_body_over_its_routes_limit(
    settings: Settings, build: Any, method: str, path: str, limit: int
) -> None:
    app = build(settings)
    declared = send(app, method, path, THIRTY_MB)
    assert declared.status == 413 and declared.read == 0
    assert declared.problem()["status"] == 413
    streamed = send(app, method, path, THIRTY_MB, declared=False)
    assert streamed.status in (401, 413) and streamed.read <= limit + CHUNK
    just_over = send(app, method, path, limit + 1)
    assert just_over.status == 413 and just_over.read == 0
    at_limit = send(app, method, path, limit)
    assert at_limit.status != 413


# The mechanism itself ------------------------------------------------------------------------------


def _app(limits: BodyLimits) -> PlainRoutes:
    app = PlainRoutes(body_limits=limits)
    install_problem_handlers(app)

    @app.post("/v1/things/{thing_id}")
    async def ordinary(thing_id: str, request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    @app.post("/v1/direct")
    async def direct(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    app.serve_directly(direct)

    async def plain(request: Any) -> PlainResponse:
        return PlainResponse(200, str(len(request.body)).encode())

    app.plain_route("POST", "/plain", plain)
    return app


@pytest.mark.parametrize("path", ["/v1/things/t-1", "/v1/direct", "/plain"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_each_kind_of_route_is_limited_alike(path: str, declared: bool) -> None:
    app = _app(BodyLimits(default=100 * KIB, routes={("POST", "/v1/things/{thing_id}"): 200 * KIB}))
    limit = 200 * KIB if path.startswith("/v1/things/") else 100 * KIB
    assert send(app, "POST", path, limit, declared=declared).status == 200
    over = send(app, "POST", path, limit + 1, declared=declared)
    assert over.status == 413
    assert over.problem()["type"].endswith("/too-large")
    assert over.read == (0 if declared else limit + 1)


def test_a_malformed_content_length_is_a_400() -> None:
    app = _app(BodyLimits())
    answer = send(app, "POST", "/v1/direct", 0, {"content-length": "lots"}, declared=False)
    assert answer.status == 400 and answer.read == 0
