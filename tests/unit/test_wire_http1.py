"""The HTTP/1.1 framing both lean clients use (``meridian.wire.http1``), without a socket: the
request head, and answers fed whole or a byte at a time."""

from __future__ import annotations

import pytest

from meridian.wire.http1 import NoAnswer, Reply, ResponseParser, post_start, request_head


def _parse(
    data: bytes, max_body: int = 1024, pieces: int = 0, end: bool = False
) -> tuple[Reply, bool]:
    """Feed ``data`` whole (``pieces`` 0) or ``pieces`` bytes at a time, then the end of the
    stream if ``end``; the answer."""
    parser = ResponseParser(max_body)
    size = pieces or len(data) or 1
    for i in range(0, len(data), size):
        answer = parser.feed(data[i : i + size])
        if answer is not None:
            return answer
    if end:
        answer = parser.feed(b"")
        assert answer is not None
        return answer
    raise AssertionError("the parser wants more")


def test_the_request_head_carries_target_host_length_and_headers() -> None:
    route = post_start("http://user@127.0.0.1:8080/push?x=1")
    assert route is not None
    key, start = route
    assert key == ("127.0.0.1", 8080)
    head = request_head(start, {"authorization": "Bearer t"}, 7)
    assert head == (
        b"POST /push?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 7\r\n"
        b"user-agent: meridian\r\nauthorization: Bearer t\r\n\r\n"
    )
    assert post_start("https://example.com/x") is None


@pytest.mark.parametrize(
    "name, value", [("x", "a\r\nevil: 1"), ("x", "a\nb"), ("x\r", "a"), ("x", "a\0")]
)
def test_a_header_with_a_line_break_or_nul_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="line break or NUL"):
        request_head("POST / HTTP/1.1\r\nhost: h\r\n", {"ok": "1", name: value}, 0)


@pytest.mark.parametrize("pieces", [0, 1, 7])
def test_answers_are_framed_whatever_the_pieces(pieces: int) -> None:
    reply, reusable = _parse(
        b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nRetry-After: 3\r\n\r\nhello", pieces=pieces
    )
    assert reply == Reply(201, {"content-length": "5", "retry-after": "3"}, b"hello") and reusable
    reply, reusable = _parse(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
        pieces=pieces,
    )
    assert reply.body == b"abcde" and reusable
    reply, reusable = _parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", pieces=pieces
    )
    assert (reply.status, reply.headers, reusable) == (204, {"server": "x"}, True)
    reply, reusable = _parse(b"HTTP/1.1 200 OK\r\n\r\nto the end", pieces=pieces, end=True)
    assert (reply.body, reusable) == (b"to the end", False)


def test_what_closes_the_connection_after_the_answer() -> None:
    assert not _parse(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")[1]
    assert not _parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")[1]
    assert not _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 200 OK\r\n")[1]
    reply, reusable = _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", max_body=4)
    assert (reply.body, reusable) == (b"0123", False)  # cut at max_body, not drained


def test_no_answer_a_cut_answer_and_a_malformed_one_are_told_apart() -> None:
    with pytest.raises(NoAnswer):
        ResponseParser(10).feed(b"")
    parser = ResponseParser(10)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab") is None
    with pytest.raises(EOFError):
        parser.feed(b"")
    for bad in (
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ):
        with pytest.raises(ValueError):
            ResponseParser(10).feed(bad)
    with pytest.raises(ValueError, match="too large"):
        ResponseParser(10).feed(b"HTTP/1.1 200 OK\r\n" + b"x-a: b\r\n" * 10_000)
