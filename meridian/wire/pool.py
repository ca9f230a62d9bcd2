"""A lean keep-alive HTTP/1.1 client for the platform's push and Eventarc deliveries.

The platform makes one POST per pushed message (Pub/Sub push is one message per request), to
services on loopback. Through httpx that cost 2-4 ms of CPU per request on the benchmark machine
(anyio streams, and httpcore scanning every pooled connection on each request), about 10-30 times
what a plain asyncio stream costs, and it was what bounded the whole event plane. This client
does only what those deliveries need: ``POST`` over plain ``http://``, a pool of idle connections
per host, responses framed by ``Content-Length`` or chunked encoding, and a deadline per request.

``Poster`` is what the deliverers call; ``HttpxPoster`` adapts an ``httpx.AsyncClient`` to it
(tests hand the dispatcher one with a mock transport).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Protocol

import httpx

from meridian.wire.blocking import post_start

MAX_HEADER_BYTES = 64 * 1024


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
        self._routes: dict[str, tuple[tuple[str, int], str]] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        """POST ``body``; the response status. PostFailed when there is no answer in time."""
        key, start = self._routes.get(url) or self._route(url)
        lines = [f"{start}content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(key, request)
        except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError) as e:
            raise PostFailed(f"POST {url}: {e!r}") from None

    def _route(self, url: str) -> tuple[tuple[str, int], str]:
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
            except _StaleConnection:
                continue  # the server closed it while idle, before reading our request
        reader, writer = await asyncio.open_connection(*key)
        return await self._send(key, reader, writer, request, reused=False)

    async def _send(
        self,
        key: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        reused: bool,
    ) -> int:
        try:
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            except (ConnectionResetError, BrokenPipeError):
                # A kept connection the server dropped while it was idle (its keep-alive timeout)
                # may answer our request with a reset instead of an end of stream: not an answer
                # to it either, so it goes again on another connection.
                if reused:
                    raise _StaleConnection from None
                raise
            if not status_line:
                raise _StaleConnection
            status, keep_alive = _status(status_line)
            length, chunked, closing = await _headers(reader)
            if chunked:
                await _skip_chunks(reader)
            elif length is not None:
                await reader.readexactly(length)
            elif status not in (204, 304) and not 100 <= status < 200:
                closing = True  # framed by the connection's end: read to EOF, then drop it
                await reader.read()
        except BaseException:
            writer.close()
            raise
        if keep_alive and not closing and len(self._idle[key]) < self._max_idle:
            self._idle[key].append((reader, writer))
        else:
            writer.close()
        return status

    async def aclose(self) -> None:
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for _, writer in connections:
            writer.close()
        for _, writer in connections:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _StaleConnection(Exception):
    pass


def _status(line: bytes) -> tuple[int, bool]:
    """(status, keep-alive by default) of the status line."""
    version, _, rest = line.decode("latin-1").strip().partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return int(rest.split(" ", 1)[0]), version == "HTTP/1.1"


async def _headers(reader: asyncio.StreamReader) -> tuple[int | None, bool, bool]:
    """(content length, chunked, connection: close) from the response headers."""
    length: int | None = None
    chunked = closing = False
    total = 0
    while (line := await reader.readline()) not in (b"\r\n", b"\n"):
        if not line:
            raise EOFError("connection closed in the response headers")
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise ValueError("response headers too large")
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            closing = "close" in value
    return length, chunked, closing


async def _skip_chunks(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        await reader.readexactly(size + 2)


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
