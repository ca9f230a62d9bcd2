"""Blocking HTTP POSTs for the external adapters: a lean keep-alive path for plain ``http://``,
httpx for everything else.

The adapters (``meridian.wire.providers``) call from worker threads, one POST per SMS, charge or
webhook. Through httpx each call to a plain ``http://`` URL (the embedded stand-ins, a client's
local endpoint) cost about 1.5 ms of CPU: its pool's locks and events, its URL and header models.
That was a third of the notification reactor's CPU per delivery. ``KeepAliveHttp`` does only what
these calls need, as ``meridian.wire.pool`` does for the platform's pushes: ``POST``
over a pooled connection, a response framed by ``Content-Length``, chunked encoding or the
connection's end, and a timeout per socket operation (as httpx's). ``https://`` URLs, which real
providers use, keep httpx (TLS, HTTP/2, its tested edge cases). Redirects are never followed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

import httpx

MAX_LINE_BYTES = 64 * 1024
MAX_HEADERS = 100


class RequestFailed(Exception):
    """No HTTP answer: unreachable, connection broken, malformed answer, or timed out."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes  # at most ``max_body`` bytes of it


_Connection = tuple[socket.socket, IO[bytes]]


def post_start(url: str) -> tuple[tuple[str, int], str] | None:
    """For a plain ``http://`` URL: the (host, port) to connect to and the request's first lines
    (``POST <target> HTTP/1.1`` and the host header, each ended by CRLF); None for any other URL.
    Shared with the platform's async pushes (``meridian.wire.pool``)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    return (parts.hostname, parts.port or 80), f"POST {target} HTTP/1.1\r\nhost: {host}\r\n"


class KeepAliveHttp:
    """Keep-alive HTTP/1.1 POSTs to plain ``http://`` URLs, safe to share between threads.

    At most ``max_idle`` connections are kept idle per ``host:port``. A response body longer than
    ``max_body`` is cut there (and its connection closed rather than drained).
    """

    def __init__(self, max_idle: int = 64, max_body: int = 1024 * 1024) -> None:
        self._max_idle = max_idle
        self._max_body = max_body
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        route = post_start(url)
        if route is None:
            raise RequestFailed(f"only plain http:// URLs are supported, not {url!r}")
        key, start = route
        lines = [f"{start}content-length: {len(body)}", "user-agent: meridian"]
        for name, value in headers.items():
            if any(c in name or c in value for c in "\r\n\0"):
                raise RequestFailed(f"header {name!r} has a line break or NUL in it")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            return self._exchange(key, request, timeout)
        except (OSError, ValueError, EOFError) as e:  # socket.timeout is an OSError
            raise RequestFailed(f"POST {url}: {e!r}") from None

    def close(self) -> None:
        with self._lock:
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for sock, reader in connections:
            reader.close()
            sock.close()

    def _exchange(self, key: tuple[str, int], request: bytes, timeout: float) -> Reply:
        while (connection := self._take_idle(key)) is not None:
            try:
                return self._send(key, connection, request, timeout)
            except _StaleConnection:
                continue  # the server closed it while idle, before answering this request
        sock = socket.create_connection(key, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return self._send(key, (sock, sock.makefile("rb")), request, timeout)
        except _StaleConnection:
            raise EOFError("connection closed before the response") from None

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                sock, reader = idle.pop()
            if _quiet(sock):
                return sock, reader
            reader.close()  # closed by the server while idle (or stray bytes): not reusable
            sock.close()

    def _send(
        self, key: tuple[str, int], connection: _Connection, request: bytes, timeout: float
    ) -> Reply:
        sock, reader = connection
        try:
            sock.settimeout(timeout)
            try:
                sock.sendall(request)
                status_line = reader.readline(MAX_LINE_BYTES)
            except (BrokenPipeError, ConnectionResetError):
                status_line = b""
            if not status_line:
                raise _StaleConnection
            status, keep_alive = _status(status_line)
            headers = _headers(reader)
            while 100 <= status < 200:  # interim answers (100 Continue): the real one follows
                status, keep_alive = _status(reader.readline(MAX_LINE_BYTES))
                headers = _headers(reader)
            body, complete = self._body(reader, status, headers)
        except BaseException:
            reader.close()
            sock.close()
            raise
        reusable = complete and keep_alive and "close" not in headers.get("connection", "")
        if not (reusable and self._put_idle(key, connection)):
            reader.close()
            sock.close()
        return Reply(status, headers, body)

    def _put_idle(self, key: tuple[str, int], connection: _Connection) -> bool:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) >= self._max_idle:
                return False
            idle.append(connection)
            return True

    def _body(self, reader: IO[bytes], status: int, headers: dict[str, str]) -> tuple[bytes, bool]:
        """The body, and whether it was read to its end with the connection still usable."""
        if status in (204, 304):
            return b"", True
        if "chunked" in headers.get("transfer-encoding", ""):
            return _chunks(reader, self._max_body)
        if "content-length" in headers:
            length = int(headers["content-length"])
            body = reader.read(min(length, self._max_body))
            if len(body) < min(length, self._max_body):
                raise EOFError("connection closed in the response body")
            return body, length <= self._max_body
        return reader.read(self._max_body), False  # framed by the connection's end


class _StaleConnection(Exception):
    pass


def _quiet(sock: socket.socket) -> bool:
    """Whether an idle connection is still open with nothing unread on it."""
    sock.setblocking(False)  # a peek that waits for nothing (with a timeout it would poll first)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # end of stream (closed by the server) or stray bytes


def _status(line: bytes) -> tuple[int, bool]:
    """(status, keep-alive by default) of the status line."""
    version, _, rest = line.decode("latin-1").strip().partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return int(rest[:3]), version == "HTTP/1.1"


def _headers(reader: IO[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = reader.readline(MAX_LINE_BYTES)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line.endswith(b"\n"):
            raise EOFError("connection closed (or line too long) in the response headers")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError(f"more than {MAX_HEADERS} response headers")


def _chunks(reader: IO[bytes], max_body: int) -> tuple[bytes, bool]:
    body = bytearray()
    while True:
        size = int(reader.readline(MAX_LINE_BYTES).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while reader.readline(MAX_LINE_BYTES) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(body), True
        if len(body) + size > max_body:
            return bytes(body) + reader.read(max_body - len(body)), False
        chunk = reader.read(size + 2)
        if len(chunk) < size + 2:
            raise EOFError("connection closed in a response chunk")
        body += chunk[:size]


class ExternalHttp:
    """Blocking POSTs: plain ``http://`` through ``KeepAliveHttp``, anything else through httpx."""

    def __init__(self) -> None:
        self._plain = KeepAliveHttp()
        self._httpx = httpx.Client(follow_redirects=False)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        if url.startswith("http://"):
            return self._plain.post(url, body, headers, timeout)
        try:
            response = self._httpx.post(url, content=body, headers=dict(headers), timeout=timeout)
        except httpx.HTTPError as e:
            raise RequestFailed(f"POST {url}: {e!r}") from None
        return Reply(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.content,
        )

    def close(self) -> None:
        self._plain.close()
        self._httpx.close()
