"""Hot POST endpoints served straight from ASGI, beside a FastAPI app's ordinary routes.

Around one small request, FastAPI's middleware stack, the walk of its routing table and its
per-request handler cost more than the work: a reactor about a third of its CPU per push, the
fake SMS gateway four fifths of its own (py-spy, reactors benchmark at 50 deliveries/s), the
command service a sixth of a ``:deliver`` (in-process, 1.07-1.17 -> 0.82 CPU-ms). ``PlainRoutes``
is a FastAPI app that serves its direct routes before any of that, in one way for two kinds:

- ``plain_route``: a handler that gets the headers and the body and returns the answer (a
  reactor's push endpoint, the embedded third-party stand-ins);
- ``serve_directly`` / ``include_direct``: FastAPI routes whose endpoint takes only the
  ``Request`` and reads its own inputs (the command service's parcel moves and telemetry). The
  route stays in the app, documented in the OpenAPI document like any other, and a request of
  another method still gets FastAPI's answer (405).

Every request, whichever way it is served, is first held to its route's body limit (the app's
``meridian.edge.body_limits.BodyLimits``): a body over it is answered 413 before it is read, so
every service's app is a ``PlainRoutes``, with or without direct routes. Plain routes are listed in
the app's OpenAPI document beside FastAPI's own, and the document declares every error answer as
the problem it is (``meridian.edge.problems.document_problems``). The app has no FastAPI
documentation pages, which load from a CDN: a service serves its own
(``meridian.edge.api_docs.serve_api_docs``).

An error a direct route raises is answered by the app's own exception handlers (problem details,
``meridian.edge.problems``). A ``serve_directly`` route runs under an HTTP server span started
here through the OpenTelemetry API, a child of the caller's ``traceparent``, the same code
whether or not spans are exported: with no exporter the tracer hands back a non-recording span
(``observability.RecordWhenExported``), which still carries the trace into logs and published
messages; its attributes are computed only for a recording one. A plain route's handler keeps
its own spans (a push belongs to its message's trace, not to the HTTP request's).

Every request is timed and counted here, the one place every service's requests pass
(``meridian.metrics``: rate, latency and 5xx per route template), and every app serves those
metrics at ``GET /metrics`` (Prometheus' text format, left out of the OpenAPI document). A direct
or plain route's labelled children are made when the route is added, so its requests pay no label
lookup; a request FastAPI routes is labelled by the route Starlette matched.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from starlette.responses import Response

from meridian import metrics
from meridian.domain.errors import MeridianError
from meridian.edge.body_limits import (
    BodyLimits,
    BodyTooLarge,
    MalformedLength,
    declared_length,
    limited,
)
from meridian.edge.problems import document_problems, problem, problem_for, problem_responses
from meridian.observability import extract_context, get_logger

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)
_TRACE_HEADERS = (b"traceparent", b"tracestate")


@dataclass(frozen=True)
class PlainRequest:
    headers: Mapping[str, str]  # names in lower case; of a repeated header, the last
    body: bytes


@dataclass(frozen=True)
class PlainResponse:
    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()


PlainHandler = Callable[[PlainRequest], Awaitable[PlainResponse]]


def json_response(status: int, payload: Any) -> PlainResponse:
    return PlainResponse(
        status, json.dumps(payload).encode(), (("content-type", "application/json"),)
    )


class PlainRoutes(FastAPI):
    """A FastAPI app whose direct routes bypass FastAPI, and whose every route is held to its
    body limit, ``body_limits`` (by default 64 KiB a body; see the module docstring)."""

    def __init__(self, body_limits: BodyLimits | None = None, **kwargs: Any) -> None:
        super().__init__(**{"docs_url": None, "redoc_url": None, **kwargs})
        self.body_limits = body_limits or BodyLimits()
        # (method, path): the handler, its body limit and its metrics
        self._plain: dict[tuple[str, str], tuple[PlainHandler, int, metrics.RouteMetrics]] = {}
        self._plain_documented: dict[tuple[str, str], dict[str, Any]] = {}
        # method: the routes served directly, with their body limits and metrics
        self._direct: dict[str, list[tuple[APIRoute, int, metrics.RouteMetrics]]] = {}
        self.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)

    def plain_route(
        self,
        method: str,
        path: str,
        handler: PlainHandler,
        summary: str = "",
        media_type: str = "application/json",
        errors: Sequence[int] = (400, 401, 403, 413, 503),
    ) -> None:
        """Serve ``handler`` at ``method path``, documented in the OpenAPI document by
        ``summary`` with a body of ``media_type``, answering ``errors`` as problems."""
        method = method.upper()
        limit = self.body_limits.of_route(method, path)
        self._plain[method, path] = handler, limit, metrics.route_metrics(method, path)
        self._plain_documented[method, path] = {
            "summary": summary,
            "operationId": f"{method.lower()}{path.replace('/', '_')}",
            "requestBody": {"required": True, "content": {media_type: {}}},
            "responses": {
                "2XX": {"description": "done"},
                **{str(status): answer for status, answer in problem_responses(*errors).items()},
            },
        }
        self.openapi_schema = None

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with the plain routes' operations added."""
        if self.openapi_schema is None:
            schema = super().openapi()
            for (method, path), operation in self._plain_documented.items():
                schema["paths"].setdefault(path, {})[method.lower()] = operation
            self.openapi_schema = document_problems(schema)
        return self.openapi_schema

    def serve_directly(self, *endpoints: Callable[..., Any]) -> None:
        """Serve the routes of these endpoints (routes of this app) straight from ASGI.
        Each must take the ``Request`` and nothing else: a parameter FastAPI would have read and
        checked for it would be skipped, so that is refused here."""
        routes = [r for r in self.routes if isinstance(r, APIRoute) and r.endpoint in endpoints]
        missing = set(endpoints) - {route.endpoint for route in routes}
        if missing:
            raise ValueError(f"not endpoints of this app's routes: {sorted(map(str, missing))}")
        for route in routes:
            self._serve_directly(route)

    def include_direct(self, router: APIRouter) -> None:
        """Include ``router`` in this app, and serve each of its routes straight from ASGI (each
        as ``serve_directly`` requires). Included before the app's other routes, its routes are
        also the first that FastAPI's routing tries."""
        routes = [route for route in router.routes if isinstance(route, APIRoute)]
        if len(routes) != len(router.routes):
            raise ValueError("a router served directly holds only FastAPI routes")
        self.include_router(router)
        for route in routes:
            self._serve_directly(route)

    def _serve_directly(self, route: APIRoute) -> None:
        d = route.dependant
        declared = (
            d.path_params + d.query_params + d.header_params + d.cookie_params + d.body_params
        )
        if (
            declared
            or d.dependencies
            or d.request_param_name is None
            or not inspect.iscoroutinefunction(route.endpoint)
        ):
            raise ValueError(
                f"{route.path}: a directly served endpoint is async and takes only the Request"
            )
        for method in route.methods or ():
            limit = self.body_limits.of_route(method, route.path)
            measured = metrics.route_metrics(method, route.path)
            self._direct.setdefault(method, []).append((route, limit, measured))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        plain = self._plain.get((method, path))
        if plain is not None:
            handler, limit, measured = plain
            status = await self._refused(limit, scope, receive, send)
            if status is None:
                status = await self._serve_plain(handler, limit, scope, receive, send)
            measured.observe(status, time.perf_counter() - started)
            return
        for route, limit, measured in self._direct.get(method, ()):
            match = route.path_regex.match(path)
            if match is not None:
                status = await self._refused(limit, scope, receive, send)
                if status is None:
                    receive = limited(receive, limit)
                    status = await self._serve_endpoint(
                        route, match.groupdict(), scope, receive, send
                    )
                measured.observe(status, time.perf_counter() - started)
                return
        limit = self.body_limits.limit_of(method, path)
        status = await self._refused(limit, scope, receive, send)
        if status is not None:
            metrics.route_metrics(method, "unmatched").observe(status, 0.0)
            return
        answered = 500  # what the server answers if the app raises before it starts an answer

        async def send_noting_status(message: Any) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = message["status"]
            await send(message)

        try:
            await super().__call__(scope, limited(receive, limit), send_noting_status)
        finally:
            # Starlette's routing leaves the route it matched in the scope.
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.route_metrics(method, template).observe(answered, time.perf_counter() - started)

    async def _refused(self, limit: int, scope: Any, receive: Any, send: Any) -> int | None:
        """None when the request's declared length is within ``limit``; else the status it was
        answered (413, or 400 for a malformed length), nothing of its body read."""
        try:
            length = declared_length(scope["headers"])
        except MalformedLength as error:
            await problem(400, "malformed-length", str(error.detail))(scope, receive, send)
            return 400
        if length is not None and length > limit:
            too_large = BodyTooLarge(limit)
            await problem(413, "too-large", str(too_large.detail))(scope, receive, send)
            return 413
        return None

    async def _serve_endpoint(
        self, route: APIRoute, path_params: dict[str, str], scope: Any, receive: Any, send: Any
    ) -> int:
        """Serve ``route``'s endpoint; the status answered."""
        # What Starlette's routing adds to the scope on a match (path parameters of these routes
        # are plain strings: the endpoint checks them itself).
        scope["app"] = self
        scope["path_params"] = path_params
        request = Request(scope, receive, send)
        method = scope["method"]
        span = tracer.start_span(
            f"{method} {route.path}", context=_callers_context(scope), kind=SpanKind.SERVER
        )
        if span.is_recording():  # the attributes FastAPI's own request span has
            span.set_attributes(
                {
                    "http.request.method": method,
                    "http.route": route.path,
                    "url.path": scope["path"],
                    "url.scheme": scope.get("scheme", "http"),
                }
            )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            try:
                response = await route.endpoint(request)
            except Exception as error:
                response = await self._handled(request, error)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(StatusCode.ERROR)
            await response(scope, receive, send)
            return response.status_code
        finally:
            otel_context.detach(token)
            span.end()

    async def _serve_plain(
        self, handler: PlainHandler, limit: int, scope: Any, receive: Any, send: Any
    ) -> int:
        """Read the body, call ``handler``, answer; the status answered (499, nginx's "client
        closed request", for a caller gone before its body arrived)."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 499
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                detail = str(BodyTooLarge(limit).detail)
                await problem(413, "too-large", detail)(scope, receive, send)
                return 413
            chunks.append(chunk)
            more = message.get("more_body", False)
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        try:
            answer = await handler(PlainRequest(headers, b"".join(chunks)))
        except Exception as error:
            response = await self._handled(Request(scope, receive, send), error)
            await response(scope, receive, send)
            return response.status_code
        await _answer(send, answer)
        return answer.status

    async def _handled(self, request: Request, error: Exception) -> Response:
        """The app's answer to ``error``: its handler for the nearest class of the error, as
        Starlette's exception middleware looks one up; else a problem answer."""
        for cls in type(error).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, error)
                return await response if inspect.isawaitable(response) else response
        if isinstance(error, MeridianError):
            return problem_for(error)
        log.exception("unhandled error", path=request.scope["path"])
        return problem(500, "internal", "unexpected error; it has been logged")


async def _metrics(request: Request) -> Response:
    """This process's metrics, for Prometheus or Managed Service for Prometheus to scrape."""
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)


def _callers_context(scope: Any) -> otel_context.Context:
    """The caller's trace from the request's W3C headers; an empty context (a new trace) without
    them, never the context the server happened to run this in."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _TRACE_HEADERS
    }
    return extract_context(carrier) if carrier else otel_context.Context()


async def _answer(send: Any, response: PlainResponse) -> None:
    # No Content-Length on a 204 (RFC 9110 §8.6); the body is empty.
    headers = [] if response.status == 204 else [(b"content-length", b"%d" % len(response.body))]
    headers += [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
