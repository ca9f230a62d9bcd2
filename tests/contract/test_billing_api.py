"""The BillingApi contract on every adapter: the HTTP client against the embedded billing API
served by uvicorn on loopback (latency and failures injected through its ``PUT /v1/config``), and
the unit tests' fake."""

from __future__ import annotations

import httpx

from meridian.embedded.external.billing_api import create_app
from meridian.ports import BillingApi
from meridian.wire.providers import HttpBillingApi
from tests.fakes_reactors import FakeBillingApi

from .external_contract import TIMEOUT_S, BillingApiContract
from .served import ServedStandIn


class TestHttpBillingApi(ServedStandIn, BillingApiContract):
    stand_in = staticmethod(create_app)

    def make_billing(self) -> BillingApi:
        return HttpBillingApi(self.base_url, timeout_s=TIMEOUT_S)

    def charged(self) -> list[tuple[str, int]]:
        charges = httpx.get(f"{self.base_url}/v1/charges").json()
        return [(c["reference"], c["amount_minor"]) for c in charges]


class TestFakeBillingApi(BillingApiContract):
    def make_billing(self) -> BillingApi:
        self.fake = FakeBillingApi()
        return self.fake

    def charged(self) -> list[tuple[str, int]]:
        return [(c.reference, c.amount_minor) for c in self.fake.charges.values()]

    def fail(self) -> None:
        self.fake.down = True

    def slow(self) -> None:
        self.fake.down = True  # in memory, a call that times out is one that fails

    def recover(self) -> None:
        self.fake.down = False
