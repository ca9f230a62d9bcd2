"""Hot POST endpoints served straight from ASGI, beside a FastAPI app's ordinary routes.

A reactor's push endpoint and the embedded third-party stand-ins (SMS gateway, billing API)
answer one small POST per event. Around that, FastAPI's middleware stack, routing and parameter
machinery cost a reactor about a third of its CPU and the fake SMS gateway four fifths of its
own (py-spy, reactors benchmark at 50 deliveries/s): more than the work of the request.
``PlainRoutes`` is a FastAPI app that serves the routes registered with ``plain_route`` before
any of that: the handler gets the headers and the body and returns the answer; domain errors
become the same problem answers as everywhere else (``meridian.http``). Every other route, the
lifespan and the exception handlers are FastAPI's, as before.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from meridian.domain.errors import MeridianError
from meridian.http import problem, problem_for
from meridian.observability import get_logger

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

    def plain_route(self, method: str, path: str, handler: PlainHandler) -> None:
        self._plain[method.upper(), path] = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            handler = self._plain.get((scope["method"], scope["path"]))
            if handler is not None:
                await _serve(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


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
    """A plain response from ``meridian.http``'s problem answer (a Starlette response)."""
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
