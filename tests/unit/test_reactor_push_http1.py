"""The lean HTTP/1.1 client the platform pushes with, against a real local HTTP server."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from meridian.wire.pool import Http1Pool, PostFailed

Handler = tuple[bytes, float]  # the raw answer, and how long to wait before sending it


async def _server(answers: list[Handler], seen: list[bytes]) -> tuple[asyncio.Server, int]:
    """Answers each request on a connection with the next scripted answer; a request is read
    as headers plus ``content-length`` bytes. An empty answer closes the connection unanswered."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            seen.append(head + await reader.readexactly(length))
            answer, delay = answers.pop(0)
            await asyncio.sleep(delay)
            if not answer:
                break
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    pool = Http1Pool()
    yield pool
    await pool.aclose()


async def test_posts_reuse_one_connection_whatever_the_framing(pool: Http1Pool) -> None:
    seen: list[bytes] = []
    answers = [
        (b"HTTP/1.1 204 No Content\r\n\r\n", 0),
        (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\noops!", 0),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 0),
    ]
    server, port = await _server(answers, seen)
    url = f"http://127.0.0.1:{port}/events?x=1"
    statuses = [
        await pool.post(url, b'{"a":1}', {"authorization": "Bearer t"}, 5) for _ in range(3)
    ]
    assert statuses == [204, 400, 200]
    assert seen[0].startswith(b"POST /events?x=1 HTTP/1.1\r\n")
    assert b"authorization: Bearer t\r\n" in seen[0] and seen[0].endswith(b'\r\n\r\n{"a":1}')
    assert len(pool._idle[("127.0.0.1", port)]) == 1  # one connection served all three
    server.close()


async def test_a_connection_the_server_dropped_while_idle_is_replaced(pool: Http1Pool) -> None:
    seen: list[bytes] = []
    answers = [
        (b"HTTP/1.1 204 No Content\r\n\r\n", 0),
        (b"", 0),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 0),
    ]
    server, port = await _server(answers, seen)
    url = f"http://127.0.0.1:{port}/events"
    assert await pool.post(url, b"1", {}, 5) == 204
    # The server closes the kept connection without answering the next request: that request
    # goes again on a fresh connection.
    assert await pool.post(url, b"2", {}, 5) == 204
    assert [r[-1:] for r in seen] == [b"1", b"2", b"2"]
    server.close()


async def test_a_kept_connection_answered_with_a_reset_is_replaced(pool: Http1Pool) -> None:
    # What a server's keep-alive timeout can look like from here: the kept connection answers
    # the next request with a reset rather than an end of stream. Like the end of stream above,
    # that is no answer, so the request goes again on a fresh connection.
    seen: list[bytes] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first_connection = connections == 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head + await reader.readexactly(1))
            if first_connection and len(seen) == 2:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()  # closed with a reset, unanswered
                return
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/events"
    assert await pool.post(url, b"1", {}, 5) == 204
    assert await pool.post(url, b"2", {}, 5) == 204
    assert [r[-1:] for r in seen] == [b"1", b"2", b"2"]
    assert connections == 2
    server.close()


async def test_no_answer_in_time_or_no_server_is_a_failed_post(pool: Http1Pool) -> None:
    server, port = await _server([(b"HTTP/1.1 204 No Content\r\n\r\n", 2)], [])
    with pytest.raises(PostFailed):
        await pool.post(f"http://127.0.0.1:{port}/slow", b"x", {}, 0.2)
    server.close()
    await server.wait_closed()
    with pytest.raises(PostFailed):
        await pool.post(f"http://127.0.0.1:{port}/gone", b"x", {}, 1)
    with pytest.raises(PostFailed, match="only plain http"):
        await pool.post("https://example.com/x", b"x", {}, 1)
