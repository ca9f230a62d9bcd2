"""The BillingApi contract on every adapter: the HTTP client against the embedded billing API
served by uvicorn on loopback (latency and failures injected through its ``PUT /v1/config``), and
the unit tests' fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meridian.embedded.external.billing_api import create_app
from meridian.ports import BillingApi
from meridian.wire.providers import HttpBillingApi
from tests.fakes_reactors import FakeBillingApi

from .external_contract import TIMEOUT_S, BillingApiContract
from .served import served


class TestHttpBillingApi(BillingApiContract):
    @pytest.fixture(autouse=True)
    def _api(self, tmp_path: Path) -> Iterator[None]:
        with served(create_app(tmp_path)) as base_url:
            self.base_url = base_url
            yield

    def make_billing(self) -> BillingApi:
        return HttpBillingApi(self.base_url, timeout_s=TIMEOUT_S)

    def _configure(self, latency_s: float = 0.0, failure_rate: float = 0.0) -> None:
        config = {"latency_s": latency_s, "failure_rate": failure_rate}
        httpx.put(f"{self.base_url}/v1/config", json=config).raise_for_status()

    def charged(self) -> list[tuple[str, int]]:
        charges = httpx.get(f"{self.base_url}/v1/charges").json()
        return [(c["reference"], c["amount_minor"]) for c in charges]

    def fail(self) -> None:
        self._configure(failure_rate=1.0)

    def slow(self) -> None:
        self._configure(latency_s=TIMEOUT_S * 3)

    def recover(self) -> None:
        self._configure()


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
