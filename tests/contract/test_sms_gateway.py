"""The SmsGateway contract on every adapter: the HTTP client against the embedded SMS gateway
served by uvicorn on loopback (latency and failures injected through its ``PUT /v1/config``), and
the unit tests' fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meridian.embedded.external.sms_gateway import create_app
from meridian.ports import SmsGateway
from meridian.wire.providers import HttpSmsGateway
from tests.fakes_reactors import FakeSmsGateway

from .external_contract import TIMEOUT_S, SmsGatewayContract
from .served import served


class TestHttpSmsGateway(SmsGatewayContract):
    @pytest.fixture(autouse=True)
    def _gateway(self, tmp_path: Path) -> Iterator[None]:
        with served(create_app(tmp_path)) as base_url:
            self.base_url = base_url
            yield

    def make_gateway(self) -> SmsGateway:
        return HttpSmsGateway(self.base_url, timeout_s=TIMEOUT_S)

    def _configure(self, latency_s: float = 0.0, failure_rate: float = 0.0) -> None:
        config = {"latency_s": latency_s, "failure_rate": failure_rate}
        httpx.put(f"{self.base_url}/v1/config", json=config).raise_for_status()

    def sent(self) -> list[tuple[str, str]]:
        messages = httpx.get(f"{self.base_url}/v1/messages").json()
        return [(m["to"], m["body"]) for m in messages]

    def fail(self) -> None:
        self._configure(failure_rate=1.0)

    def slow(self) -> None:
        self._configure(latency_s=TIMEOUT_S * 3)

    def recover(self) -> None:
        self._configure()


class TestFakeSmsGateway(SmsGatewayContract):
    def make_gateway(self) -> SmsGateway:
        self.fake = FakeSmsGateway()
        return self.fake

    def sent(self) -> list[tuple[str, str]]:
        return list(self.fake.sent.values())

    def fail(self) -> None:
        self.fake.down = True

    def slow(self) -> None:
        self.fake.down = True  # in memory, a call that times out is one that fails

    def recover(self) -> None:
        self.fake.down = False
