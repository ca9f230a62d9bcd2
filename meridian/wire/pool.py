"""The asyncio keep-alive HTTP/1.1 client of the embedded platform's push and Eventarc deliveries.

The platform makes one POST per pushed message (Pub/Sub push is one message per request), to
services on loopback. Through httpx that cost 2-4 ms of CPU per request on the benchmark machine
(anyio streams, and httpcore scanning every pooled connection on each request), about 10-30 times
what a plain asyncio stream costs, and it was what bounded the whole event plane. ``Http1Pool``
does only what those deliveries need: ``POST`` over plain ``http://``, a pool of idle connections
per host, and a deadline per request; the request head and the answer's framing are
``meridian.wire.http1``'s, shared with the blocking client. It only ever talks to the embedded
services (loopback or the local network the platform runs on).

``Poster`` is what the deliverers (``meridian.embedded.pubsub.push``, ``meridian.embedded.eventarc``)
call; ``HttpxPoster`` adapts an ``httpx.AsyncClient`` to it (tests hand the dispatcher one with a
mock transport).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Protocol

import httpx

from meridian.wire.http1 import NoAnswer, ResponseParser, Route, post_start, request_head

# An answer's body is read and dropped; one longer than this closes its connection.
MAX_BODY_BYTES = 1024 * 1024
READ_BYTES = 64 * 1024


class PostFailed(Exception):
    """No HTTP answer: connection refused or broken, malformed answer, or deadline passed."""


class Poster(Protocol):
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> int: ...

    async def aclose(self) -> None: ...


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Http1Pool:
    """Keep-alive connections per ``host:port``, at most ``max_idle`` kept idle per host."""

    def __init__(self, max_idle: int = 64) -> None:
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        # URL → (host, port) and the request line and host header: a pool posts to a handful
        # of endpoints, and parsing the URL again was a few percent of the platform's CPU.
        self._routes: dict[str, Route] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        """POST ``body``; the response status. PostFailed when there is no answer in time."""
        key, start = self._routes.get(url) or self._route(url)
        try:
            request = request_head(start, headers, len(body)) + body
            async with asyncio.timeout(timeout):
                return await self._exchange(key, request)
        except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError) as e:
            raise PostFailed(f"POST {url}: {e!r}") from None

    def _route(self, url: str) -> Route:
        route = post_start(url)
        if route is None:
            raise PostFailed(f"only plain http:// URLs are supported, not {url!r}")
        if len(self._routes) >= 256:
            self._routes.clear()  # endpoints that changed; the current ones come back
        self._routes[url] = route
        return route

    async def _exchange(self, key: tuple[str, int], request: bytes) -> int:
        idle = self._idle.setdefault(key, [])
        while idle:
            reader, writer = idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._send(key, reader, writer, request, reused=True)
            except NoAnswer:
                continue  # the server closed it while idle, before reading our request
        reader, writer = await asyncio.open_connection(*key)
        try:
            return await self._send(key, reader, writer, request, reused=False)
        except NoAnswer:
            raise EOFError("connection closed before the response") from None

    async def _send(
        self,
        key: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        reused: bool,
    ) -> int:
        parser = ResponseParser(MAX_BODY_BYTES)
        try:
            try:
                # No drain: nothing more is written before the answer, which is what is waited
                # for (a broken connection shows there); it was a microsecond per push.
                writer.write(request)
                data = await reader.read(READ_BYTES)
            except (ConnectionResetError, BrokenPipeError):
                # A kept connection the server dropped while it was idle (its keep-alive timeout)
                # may answer our request with a reset instead of an end of stream: not an answer
                # to it either, so it goes again on another connection.
                if reused:
                    raise NoAnswer from None
                raise
            while (answer := parser.feed(data)) is None:
                data = await reader.read(READ_BYTES)
            reply, reusable = answer
        except BaseException:
            writer.close()
            raise
        if reusable and len(self._idle[key]) < self._max_idle:
            self._idle[key].append((reader, writer))
        else:
            writer.close()
        return reply.status

    async def aclose(self) -> None:
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for _, writer in connections:
            writer.close()
        for _, writer in connections:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HttpxPoster:
    """``Poster`` over an httpx client (whose transport tests may mock)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        try:
            response = await self._client.post(
                url, content=body, headers=dict(headers), timeout=timeout
            )
        except httpx.HTTPError as e:
            raise PostFailed(f"POST {url}: {e!r}") from None
        return response.status_code

    async def aclose(self) -> None:
        """The client is its owner's to close."""
