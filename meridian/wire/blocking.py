"""The blocking HTTP client of the provider adapters (``meridian.wire.providers``): a lean
keep-alive path for plain ``http://``, httpx for ``https://``.

The adapters call from worker threads, one POST per SMS, charge or webhook. Through httpx each
call to a plain ``http://`` URL cost about 1.5 ms of CPU: its pool's locks and events, its URL and
header models. That was a third of the notification reactor's CPU per delivery. ``KeepAliveHttp``
does only what these calls need, as ``meridian.wire.pool`` does for the platform's pushes: ``POST``
over a pooled connection and a timeout per socket operation (as httpx's); the request head and
the answer's framing are ``meridian.wire.http1``'s, shared with that pool.

The plain path only ever talks to the embedded stand-ins (SMS gateway, billing API) and to
loopback or allow-listed client endpoints: in production the providers are their ``https://``
APIs, and on the ``gcp`` backend a client webhook endpoint must be ``https://`` (refused
otherwise at registration by ``meridian.app.webhooks`` and at send time by
``HttpWebhookSender``). ``https://`` URLs keep httpx (TLS, HTTP/2, its tested edge cases).
Redirects are never followed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping

import httpx

from meridian.wire.http1 import NoAnswer, Reply, ResponseParser, post_start, request_head

READ_BYTES = 64 * 1024


class RequestFailed(Exception):
    """No HTTP answer: unreachable, connection broken, malformed answer, or timed out."""


class KeepAliveHttp:
    """Keep-alive HTTP/1.1 POSTs to plain ``http://`` URLs, safe to share between threads.

    At most ``max_idle`` connections are kept idle per ``host:port``. A response body longer than
    ``max_body`` is cut there (and its connection closed rather than drained).
    """

    def __init__(self, max_idle: int = 64, max_body: int = 1024 * 1024) -> None:
        self._max_idle = max_idle
        self._max_body = max_body
        self._idle: dict[tuple[str, int], list[socket.socket]] = {}
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        route = post_start(url)
        if route is None:
            raise RequestFailed(f"only plain http:// URLs are supported, not {url!r}")
        key, start = route
        try:
            request = request_head(start, headers, len(body)) + body
            return self._exchange(key, request, timeout)
        except (OSError, ValueError, EOFError) as e:  # socket.timeout is an OSError
            raise RequestFailed(f"POST {url}: {e!r}") from None

    def close(self) -> None:
        with self._lock:
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for sock in connections:
            sock.close()

    def _exchange(self, key: tuple[str, int], request: bytes, timeout: float) -> Reply:
        while (sock := self._take_idle(key)) is not None:
            try:
                return self._send(key, sock, request, timeout)
            except NoAnswer:
                continue  # the server closed it while idle, before answering this request
        sock = socket.create_connection(key, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return self._send(key, sock, request, timeout)
        except NoAnswer:
            raise EOFError("connection closed before the response") from None

    def _take_idle(self, key: tuple[str, int]) -> socket.socket | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                sock = idle.pop()
            if _quiet(sock):
                return sock
            sock.close()  # closed by the server while idle (or stray bytes): not reusable

    def _send(
        self, key: tuple[str, int], sock: socket.socket, request: bytes, timeout: float
    ) -> Reply:
        parser = ResponseParser(self._max_body)
        try:
            sock.settimeout(timeout)
            try:
                sock.sendall(request)
                data = sock.recv(READ_BYTES)
            except (BrokenPipeError, ConnectionResetError):
                raise NoAnswer from None
            while (answer := parser.feed(data)) is None:
                data = sock.recv(READ_BYTES)
            reply, reusable = answer
        except BaseException:
            sock.close()
            raise
        if not (reusable and self._put_idle(key, sock)):
            sock.close()
        return reply

    def _put_idle(self, key: tuple[str, int], sock: socket.socket) -> bool:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) >= self._max_idle:
                return False
            idle.append(sock)
            return True


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
