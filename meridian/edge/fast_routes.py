"""Hot POST endpoints served straight from ASGI, beside a FastAPI app's ordinary routes.

A reactor's push endpoint and the embedded third-party stand-ins (SMS gateway, billing API)
answer one small POST per event. Around that, FastAPI's middleware stack, routing and parameter
machinery cost a reactor about a third of its CPU and the fake SMS gateway four fifths of its
own (py-spy, reactors benchmark at 50 deliveries/s): more than the work of the request.
``PlainRoutes`` is a FastAPI app that serves the routes registered with ``plain_route`` before
any of that: the handler gets the headers and the body and returns the answer; domain errors
become the same problem answers as everywhere else (``meridian.edge.problems``). Every other route, the
lifespan and the exception handlers are FastAPI's, as before.

``serve_directly`` does the same for FastAPI routes whose endpoint takes only the ``Request`` and
reads its own inputs (the command service's parcel moves and telemetry): the route stays in the
app, documented in the OpenAPI document like any other, but a request it matches goes straight to
its endpoint, under the request's trace context (``observability.request_trace``), and an error
it raises is answered by the app's own exception handlers. The middleware stack, the walk of the
routing table and FastAPI's per-request handler around an endpoint with nothing to inject were a
sixth of a ``:deliver``'s CPU. While spans are exported the request takes FastAPI's path, which
records its span.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from meridian.domain.errors import MeridianError
from meridian.edge.problems import problem, problem_for
from meridian.observability import get_logger, request_trace, spans_exported

log = get_logger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024  # a Pub/Sub push of a 10 MB message, base64 in its envelope


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
    """A FastAPI app whose ``plain_route`` endpoints bypass FastAPI (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._plain: dict[tuple[str, str], PlainHandler] = {}
        self._direct: dict[str, list[APIRoute]] = {}  # method: routes served directly

    def plain_route(self, method: str, path: str, handler: PlainHandler) -> None:
        self._plain[method.upper(), path] = handler

    def serve_directly(self, *endpoints: Callable[..., Any]) -> None:
        """Serve the routes of these endpoints straight from ASGI (see the module docstring).
        Each must take the ``Request`` and nothing else: a parameter FastAPI would have read and
        checked for it would be skipped, so that is refused here."""
        routes = [r for r in self.routes if isinstance(r, APIRoute) and r.endpoint in endpoints]
        missing = set(endpoints) - {route.endpoint for route in routes}
        if missing:
            raise ValueError(f"not endpoints of this app's routes: {sorted(map(str, missing))}")
        for route in routes:
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
                self._direct.setdefault(method, []).append(route)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            handler = self._plain.get((scope["method"], scope["path"]))
            if handler is not None:
                await _serve(handler, scope, receive, send)
                return
            for route in self._direct.get(scope["method"], ()):
                match = route.path_regex.match(scope["path"])
                if match is not None and not spans_exported():
                    await self._serve_directly(route, match.groupdict(), scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _serve_directly(
        self, route: APIRoute, path_params: dict[str, str], scope: Any, receive: Any, send: Any
    ) -> None:
        # What Starlette's routing adds to the scope on a match (path parameters of these routes
        # are plain strings: the endpoint checks them itself).
        scope["app"] = self
        scope["path_params"] = path_params
        request = Request(scope, receive, send)
        with request_trace(scope["headers"]):
            try:
                response = await route.endpoint(request)
            except Exception as error:
                response = await self._handled(request, error)
            await response(scope, receive, send)

    async def _handled(self, request: Request, error: Exception) -> Response:
        """The app's answer to ``error``: its handler for the nearest class of the error, as
        Starlette's exception middleware looks one up; re-raised if it has none."""
        for cls in type(error).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, error)
                return await response if inspect.isawaitable(response) else response
        raise error


async def _serve(handler: PlainHandler, scope: Any, receive: Any, send: Any) -> None:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            await _answer(send, _problem(problem(413, "too-large", "request body too large")))
            return
        chunks.append(chunk)
        more = message.get("more_body", False)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    try:
        response = await handler(PlainRequest(headers, b"".join(chunks)))
    except MeridianError as e:
        response = _problem(problem_for(e))
    except Exception:
        log.exception("unhandled error", path=scope["path"])
        response = _problem(problem(500, "internal", "unexpected error; it has been logged"))
    await _answer(send, response)


def _problem(answer: Any) -> PlainResponse:
    """A plain response from ``meridian.edge.problems``'s problem answer (a Starlette response)."""
    return PlainResponse(
        answer.status_code,
        bytes(answer.body),
        [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in answer.raw_headers
            if name != b"content-length"
        ],
    )


async def _answer(send: Any, response: PlainResponse) -> None:
    # No Content-Length on a 204 (RFC 9110 §8.6); the body is empty.
    headers = [] if response.status == 204 else [(b"content-length", b"%d" % len(response.body))]
    headers += [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
