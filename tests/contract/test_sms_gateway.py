"""The SmsGateway contract on every adapter: the HTTP client against the embedded SMS gateway
served by uvicorn on loopback (latency and failures injected through its ``PUT /v1/config``), and
the unit tests' fake."""

from __future__ import annotations

import httpx

from meridian.embedded.external.sms_gateway import create_app
from meridian.ports import SmsGateway
from meridian.wire.providers import HttpSmsGateway
from tests.fakes_reactors import FakeSmsGateway

from .external_contract import TIMEOUT_S, SmsGatewayContract
from .served import ServedStandIn


class TestHttpSmsGateway(ServedStandIn, SmsGatewayContract):
    stand_in = staticmethod(create_app)

    def make_gateway(self) -> SmsGateway:
        return HttpSmsGateway(self.base_url, timeout_s=TIMEOUT_S)

    def sent(self) -> list[tuple[str, str]]:
        messages = httpx.get(f"{self.base_url}/v1/messages").json()
        return [(m["to"], m["body"]) for m in messages]


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
