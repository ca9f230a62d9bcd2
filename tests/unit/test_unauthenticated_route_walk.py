"""Authentication comes first everywhere (#25 item 7): every route of every service, asked with no
credentials at all, answers 401, never a 422 that describes the body it wanted, a 404, a 405 or a
500. Then authorisation (403), then validation (422).

Each service is built in-process as its bootstrap builds it, on the embedded adapters in a
temporary data directory, and walked from its own OpenAPI document plus the routes the document
leaves out (``include_in_schema=False``), so a route added later is walked without editing this
test. Every method a route declares is tried, with an empty body and with a malformed one. The
routes that are public on purpose are listed below with the reason.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from meridian.config import Settings

DOCUMENTATION = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
# Every HTTP service walked below: each serves its docs, its health check and its metrics.
SERVICES = (
    "command",
    "dispatch",
    "live-map",
    "event-publisher",
    "billing",
    "client-webhook",
    "driver-scoring",
    "eta",
    "notification",
    "pod",
    "legacy-writer",
)
# (service, method, path template): why anyone may call it.
PUBLIC: dict[tuple[str, str, str], str] = {
    **{
        (service, "GET", path): "documentation of the API, public like the API's shape"
        for service in SERVICES
        for path in DOCUMENTATION
    },
    **{
        (service, "GET", "/healthz"): "the health check Cloud Run and the supervisor call"
        for service in SERVICES
    },
    **{
        (service, "GET", "/metrics"): "Prometheus metrics (counts and latencies, no data), "
        "scraped inside the project; the load balancer sends only named paths to a service and "
        "Cloud Armor denies /metrics from outside (docs/operations.md)"
        for service in SERVICES
    },
    ("live-map", "GET", "/map"): "the customer's map page; its data comes from the stream, "
    "which takes the tracking token (from the page's URL fragment) as a bearer header",
    ("live-map", "GET", "/dispatch"): "the dispatchers' map page; its stream takes a token",
    ("live-map", "GET", "/static/{name}"): "the pages' scripts and styles",
    ("live-map", "GET", "/assets/leaflet/{name}"): "the map library's files",
}

# Not user-facing, not walked: the embedded stand-ins of Google's side and of the third parties
# (meridian/embedded, meridian/runtime/platform.py). They stand in for services Meridian does not
# run in production, and they serve on loopback only.


def _command(settings: Settings) -> FastAPI:
    from services.command.app import create_app
    from services.command.bootstrap import bootstrap

    return create_app(*bootstrap(settings))


def _dispatch(settings: Settings) -> FastAPI:
    from services.dispatch.app import create_app
    from services.dispatch.bootstrap import bootstrap

    return create_app(*bootstrap(settings))


def _live_map(settings: Settings) -> FastAPI:
    from services.live_map.app import create_app
    from services.live_map.bootstrap import MapOptions, bootstrap

    return create_app(bootstrap(settings, MapOptions(role="all")))


def _event_publisher(settings: Settings) -> FastAPI:
    from services.event_publisher.app import create_app
    from services.event_publisher.bootstrap import bootstrap

    return create_app(*bootstrap(settings))


def _reactor(package: str) -> Callable[[Settings], FastAPI]:
    def build(settings: Settings) -> FastAPI:
        app: FastAPI = importlib.import_module(f"services.reactors.{package}.app").create_app(
            settings
        )
        return app

    return build


def _legacy_writer(settings: Settings) -> FastAPI:
    from services.sync.writer.app import create_app

    return create_app(settings)


SERVICES: dict[str, Callable[[Settings], FastAPI]] = {
    "command": _command,
    "dispatch": _dispatch,
    "live-map": _live_map,
    "event-publisher": _event_publisher,
    "billing": _reactor("billing"),
    "client-webhook": _reactor("webhook"),
    "driver-scoring": _reactor("driver_scoring"),
    "eta": _reactor("eta"),
    "notification": _reactor("notification"),
    "pod": _reactor("pod"),
    "legacy-writer": _legacy_writer,
}


def routes_of(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route: the OpenAPI document's operations (the push
    endpoints' included), then the routes it leaves out."""
    seen: set[tuple[str, str]] = set()
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                seen.add((method.upper(), path))
    for route in app.routes:
        methods = getattr(route, "methods", None) or ()
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", getattr(route, "path", ""))
        for method in methods:
            if method != "HEAD":
                seen.add((method, path))
    yield from sorted(seen)


def concrete(path: str) -> str:
    """``path`` with each parameter given a well-formed dummy value."""
    return re.sub(r"\{\w+\}", "x-1", path)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("walk")
    return Settings(data_dir=data_dir)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_route_refuses_an_anonymous_caller_first(service: str, settings: Settings) -> None:
    app = SERVICES[service](settings)
    client = TestClient(app, raise_server_exceptions=False)
    walked: list[str] = []
    wrong: list[str] = []
    for method, path in routes_of(app):
        if (service, method, path) in PUBLIC:
            continue
        walked.append(f"{method} {path}")
        bodies: list[dict[str, Any]] = [{}]
        if method in {"POST", "PUT", "PATCH"}:
            # Nothing about the body may be judged before the caller is known.
            bodies.append(
                {"content": b"{not json", "headers": {"content-type": "application/json"}}
            )
            bodies.append({"json": {"unexpected": ["fields"]}})
        for body in bodies:
            answer = client.request(method, concrete(path), **body)
            if answer.status_code != 401:
                wrong.append(f"{method} {path} {sorted(body)}: {answer.status_code} {answer.text}")
            elif not answer.headers["content-type"].startswith("application/problem+json"):
                wrong.append(f"{method} {path}: 401 but not a problem document")
    assert walked, f"{service}: nothing walked"
    assert not wrong, "\n".join(wrong)


def test_the_public_routes_listed_exist(settings: Settings) -> None:
    """An exception that names no route would hide a typo (or a route renamed without it)."""
    present = {
        (service, method, path)
        for service, build in SERVICES.items()
        for method, path in routes_of(build(settings))
    }
    # FastAPI serves its documentation pages only where an app keeps the default URLs.
    missing = {key for key in set(PUBLIC) - present if key[2] not in DOCUMENTATION}
    assert not missing, missing


def test_the_walk_includes_the_push_endpoints(settings: Settings) -> None:
    """The push endpoints are served before FastAPI (``meridian.edge.fast_routes``) and must
    still be in each service's OpenAPI document, hence in the walk."""
    for service, path in [("billing", "/events"), ("event-publisher", "/firestore")]:
        paths = SERVICES[service](settings).openapi()["paths"]
        assert "post" in paths.get(path, {}), f"{service}: {path} is not documented"


def test_a_route_of_each_kind_authenticates_before_it_validates(settings: Settings) -> None:
    """The issue's case: POST /v1/steps/release with no token and no body is a 401."""
    client = TestClient(SERVICES["dispatch"](settings), raise_server_exceptions=False)
    answer = client.post("/v1/steps/release")
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/steps/no-such-step").status_code == 401  # not 404
    assert (
        client.post("/v1/steps/release", headers={"Idempotency-Key": "k" * 300}).status_code == 401
    )  # not 422 for the header
