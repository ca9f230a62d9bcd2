"""The external adapters' keep-alive HTTP/1.1 client against a real server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from meridian.domain.errors import Unavailable, ValidationError
from meridian.wire.blocking import KeepAliveHttp, RequestFailed
from meridian.wire.providers import HttpWebhookSender


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.seen.append((self.path, dict(self.headers), body, self.client_address))  # type: ignore[attr-defined]
        if self.path == "/slow":
            time.sleep(0.5)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", body):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/until-close":
            self.send_response(200)
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"all of it")
            self.close_connection = True
            return
        status = 503 if self.path == "/busy" else 201
        answer = b'{"echo": "%s"}' % body
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "120")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen = []  # type: ignore[attr-defined]
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_port}{path}"


def test_posts_reuse_one_connection_and_carry_headers_and_body(
    server: ThreadingHTTPServer,
) -> None:
    http = KeepAliveHttp()
    replies = [
        http.post(_url(server, "/v1/x?a=1"), b"body-%d" % i, {"Idempotency-Key": f"k{i}"}, 5)
        for i in range(3)
    ]
    assert [r.status for r in replies] == [201, 201, 201]
    assert replies[2].body == b'{"echo": "body-2"}'
    assert replies[2].headers["content-length"] == "18"
    seen = server.seen  # type: ignore[attr-defined]
    assert [path for path, *_ in seen] == ["/v1/x?a=1"] * 3
    assert seen[1][1]["Idempotency-Key"] == "k1"
    assert seen[1][1]["host"] == f"127.0.0.1:{server.server_port}"
    assert len({address for *_, address in seen}) == 1  # one connection for all three
    http.close()


def test_an_error_answer_keeps_its_status_and_retry_after(server: ThreadingHTTPServer) -> None:
    reply = KeepAliveHttp().post(_url(server, "/busy"), b"x", {}, 5)
    assert (reply.status, reply.headers["retry-after"]) == (503, "120")


def test_chunked_and_close_framed_answers_are_read_whole(server: ThreadingHTTPServer) -> None:
    http = KeepAliveHttp()
    assert http.post(_url(server, "/chunked"), b"world", {}, 5).body == b"hello world"
    assert http.post(_url(server, "/until-close"), b"", {}, 5).body == b"all of it"
    assert http.post(_url(server, "/chunked"), b"again", {}, 5).body == b"hello again"


def test_a_connection_the_server_closed_while_idle_is_replaced(
    server: ThreadingHTTPServer,
) -> None:
    http = KeepAliveHttp()
    http.post(_url(server, "/a"), b"1", {}, 5)
    server.shutdown()  # stop accepting; the idle connection's handler thread stays alive
    for sock in http._idle[("127.0.0.1", server.server_port)]:
        sock.shutdown(socket.SHUT_RD)  # as if the server had closed it: reads at EOF
    threading.Thread(target=server.serve_forever, daemon=True).start()
    assert http.post(_url(server, "/b"), b"2", {}, 5).status == 201
    paths = [path for path, *_ in server.seen]  # type: ignore[attr-defined]
    assert paths == ["/a", "/b"]  # sent once, on a new connection


def test_no_answer_in_time_or_no_server_fails_the_request(server: ThreadingHTTPServer) -> None:
    http = KeepAliveHttp()
    with pytest.raises(RequestFailed):
        http.post(_url(server, "/slow"), b"", {}, 0.1)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(RequestFailed):
        http.post(f"http://127.0.0.1:{port}/", b"", {}, 1)
    with pytest.raises(RequestFailed):
        http.post(_url(server, "/a"), b"", {"x-injected": "a\r\nevil: 1"}, 1)


def test_the_webhook_sender_maps_no_answer_to_unavailable_and_passes_retry_after(
    server: ThreadingHTTPServer,
) -> None:
    sender = HttpWebhookSender()
    response = sender.send(_url(server, "/busy"), {"webhook-id": "evt-1"}, b"{}", 5)
    assert (response.status, response.headers["retry-after"]) == (503, "120")
    with pytest.raises(Unavailable):
        sender.send(_url(server, "/slow"), {}, b"{}", 0.1)


def test_the_production_webhook_sender_refuses_plain_http_unsent(
    server: ThreadingHTTPServer,
) -> None:
    with pytest.raises(ValidationError, match="https:// in production"):
        HttpWebhookSender(https_only=True).send(_url(server, "/busy"), {}, b"{}", 5)
    assert server.seen == []  # type: ignore[attr-defined]
