"""The WebhookSender contract on every adapter: the HTTP client against client endpoints served
by uvicorn on loopback (a plain ASGI app answering what each test asks of it), and the unit tests'
fake (its script of answers standing in for the endpoints)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest

from meridian.ports import WebhookSender
from meridian.wire.providers import HttpWebhookSender
from tests.fakes_reactors import FakeWebhookSender

from .conftest import free_port
from .external_contract import TIMEOUT_S, WebhookSenderContract
from .served import served

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Endpoints:
    """Client webhook endpoints: ``/answer/<name>`` answers what ``script[name]`` says (status,
    headers, body), ``/silent`` answers only after SILENT_S; every request is recorded."""

    SILENT_S = TIMEOUT_S * 4

    def __init__(self) -> None:
        self.script: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.received: list[tuple[str, dict[str, str], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append((scope["path"], headers, body))
        if scope["path"] == "/silent":
            await asyncio.sleep(self.SILENT_S)
            status, answer_headers, answer = 200, {}, b""
        else:
            status, answer_headers, answer = self.script[scope["path"].removeprefix("/answer/")]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in answer_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer})


class TestHttpWebhookSender(WebhookSenderContract):
    @pytest.fixture(autouse=True)
    def _endpoints(self) -> Iterator[None]:
        self.endpoints = Endpoints()
        with served(self.endpoints) as base_url:
            self.base_url = base_url
            yield

    def make_sender(self) -> WebhookSender:
        return HttpWebhookSender()

    def answering(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> str:
        name = f"e{len(self.endpoints.script)}"
        self.endpoints.script[name] = (status, dict(headers), body)
        return f"{self.base_url}/answer/{name}"

    def received(self) -> list[tuple[str, dict[str, str], bytes]]:
        return [(self.base_url + path, h, b) for path, h, b in self.endpoints.received]

    def redirecting(self) -> tuple[str, str]:
        target = self.answering(200, {})
        return self.answering(307, {"Location": target}), target

    def refusing(self) -> str:
        return f"http://127.0.0.1:{free_port()}/hooks"

    def silent(self) -> str:
        return f"{self.base_url}/silent"


class TestFakeWebhookSender(WebhookSenderContract):
    def make_sender(self) -> WebhookSender:
        self.fake = FakeWebhookSender()
        return self.fake

    def answering(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> str:
        self.fake.statuses, self.fake.headers, self.fake.body = [status], dict(headers), body
        return "https://client.example/hooks/answering"

    def received(self) -> list[tuple[str, dict[str, str], bytes]]:
        return [(u, {k.lower(): v for k, v in h.items()}, b) for u, h, b in self.fake.requests]

    def redirecting(self) -> tuple[str, str]:
        target = "https://client.example/hooks/moved"
        return self.answering(307, {"Location": target}), target

    def refusing(self) -> str:
        self.fake.statuses = [None]
        return "https://client.example/hooks/refusing"

    def silent(self) -> str:
        self.fake.statuses = [None]
        return "https://client.example/hooks/silent"
