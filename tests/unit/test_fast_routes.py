"""``PlainRoutes.serve_directly``: a directly served route answers as FastAPI would, and runs the
same code, under its own server span, whether or not spans are exported."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meridian.domain.errors import NotFound
from meridian.edge.fast_routes import PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.observability import RecordWhenExported, configure_tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
EXPORTED = InMemorySpanExporter()


def _provider() -> TracerProvider:
    provider = configure_tracing("test")
    if not getattr(provider, "_fast_routes_test", False):
        # Only what is recorded reaches it: nothing, while the sampler is not exporting.
        provider.add_span_processor(SimpleSpanProcessor(EXPORTED))
        provider._fast_routes_test = True  # type: ignore[attr-defined]
    return provider


def _app() -> PlainRoutes:
    app = PlainRoutes()
    install_problem_handlers(app)

    @app.post("/v1/items/{item_id}:touch")
    async def touch(request: Request) -> JSONResponse:
        item_id = request.path_params["item_id"]
        if item_id == "missing":
            raise NotFound(f"no item {item_id}")
        if item_id == "broken":
            raise RuntimeError("a bug")
        span = trace.get_current_span().get_span_context()
        body = await request.body()
        return JSONResponse(
            {"item_id": item_id, "trace_id": f"{span.trace_id:032x}", "body": body.decode()},
            status_code=202,
        )

    app.serve_directly(touch)
    return app


@pytest.fixture(params=[False, True], ids=["not-exported", "spans-exported"])
def exported(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    sampler = _provider().sampler
    assert isinstance(sampler, RecordWhenExported)
    monkeypatch.setattr(sampler, "exporting", request.param)
    EXPORTED.clear()
    return bool(request.param)


@pytest.fixture
def client(exported: bool) -> TestClient:
    # Whether or not spans are exported, a request takes the same direct path: both answer the same.
    return TestClient(_app(), raise_server_exceptions=False)


def test_a_direct_route_gets_its_path_parameters_body_and_the_callers_trace(
    client: TestClient, exported: bool
) -> None:
    response = client.post(
        "/v1/items/it-7:touch",
        content=b"hello",
        headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    )
    assert response.status_code == 202
    assert response.json() == {"item_id": "it-7", "trace_id": TRACE_ID, "body": "hello"}
    spans = EXPORTED.get_finished_spans()
    if not exported:
        assert spans == ()
        return
    # Recorded like FastAPI's own request span: a server span, child of the caller's.
    (span,) = spans
    assert span.name == "POST /v1/items/{item_id}:touch"
    assert span.kind == trace.SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/v1/items/{item_id}:touch"
    assert span.attributes["http.response.status_code"] == 202


def test_errors_are_answered_by_the_apps_handlers(client: TestClient) -> None:
    missing = client.post("/v1/items/missing:touch")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "no item missing"
    broken = client.post("/v1/items/broken:touch")
    assert broken.status_code == 500
    assert broken.json()["detail"] == "unexpected error; it has been logged"


def test_other_methods_and_paths_are_fastapis(client: TestClient) -> None:
    assert client.get("/v1/items/it-7:touch").status_code == 405
    assert client.post("/v1/items/it-7:poke").status_code == 404


def test_only_endpoints_that_take_just_the_request_are_served_directly() -> None:
    app = PlainRoutes()

    @app.post("/v1/things/{thing_id}")
    async def declared(thing_id: str) -> dict[str, str]:
        return {"thing_id": thing_id}

    @app.post("/v1/sync")
    def sync(request: Request) -> dict[str, str]:
        return {}

    async def not_a_route(request: Request) -> None:
        return None

    with pytest.raises(ValueError, match="takes only the Request"):
        app.serve_directly(declared)
    with pytest.raises(ValueError, match="is async"):
        app.serve_directly(sync)
    with pytest.raises(ValueError, match="not endpoints"):
        app.serve_directly(not_a_route)


def test_a_router_included_directly_is_served_directly_and_documented() -> None:
    app = PlainRoutes()
    install_problem_handlers(app)
    hot = APIRouter()
    served: list[str] = []

    @hot.post("/v1/items/{item_id}:poke", status_code=202)
    async def poke(request: Request) -> JSONResponse:
        served.append(request.path_params["item_id"])
        return JSONResponse({"poked": request.path_params["item_id"]}, status_code=202)

    app.include_direct(hot)
    client = TestClient(app)
    assert client.post("/v1/items/it-7:poke").json() == {"poked": "it-7"}
    assert served == ["it-7"]
    assert client.get("/v1/items/it-7:poke").status_code == 405  # FastAPI's answer
    assert "/v1/items/{item_id}:poke" in client.get("/openapi.json").json()["paths"]

    declared = APIRouter()

    @declared.post("/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"thing_id": thing_id}

    with pytest.raises(ValueError, match="takes only the Request"):
        PlainRoutes().include_direct(declared)
