"""The TravelTime contract on every adapter: the embedded great-circle model, the Routes API
adapter against a stand-in of ``computeRoutes`` (an httpx transport: no network), and the unit
tests' fake."""

from __future__ import annotations

import pytest

from meridian.embedded.external.local import GreatCircleTravelTime
from meridian.gcp.external import RoutesApiTravelTime
from meridian.ports import TravelTime
from tests.fakes_reactors import FakeTravelTime

from .external_contract import TIMEOUT_S, TravelTimeContract
from .google_stand_ins import RoutesApiStandIn

COMPUTED_LOCALLY = (
    "computed in-process from coordinates and the hour: there is no provider to fail or to be slow"
)


class TestGreatCircleTravelTime(TravelTimeContract):
    def make_travel_time(self) -> TravelTime:
        return GreatCircleTravelTime()

    @pytest.mark.skip(reason=COMPUTED_LOCALLY)
    def test_a_failing_provider_is_unavailable(self, travel: TravelTime) -> None:
        raise AssertionError("skipped")

    @pytest.mark.skip(reason=COMPUTED_LOCALLY)
    def test_a_provider_that_times_out_is_unavailable(self, travel: TravelTime) -> None:
        raise AssertionError("skipped")


class TestRoutesApiTravelTime(TravelTimeContract):
    def make_travel_time(self) -> TravelTime:
        self.api = RoutesApiStandIn("routes-key")
        return RoutesApiTravelTime("routes-key", TIMEOUT_S, transport=self.api.transport())

    def fail(self) -> None:
        self.api.failing = True

    def slow(self) -> None:
        self.api.silent = True


class TestFakeTravelTime(TravelTimeContract):
    def make_travel_time(self) -> TravelTime:
        return FakeTravelTime()

    @pytest.mark.skip(reason=COMPUTED_LOCALLY)
    def test_a_failing_provider_is_unavailable(self, travel: TravelTime) -> None:
        raise AssertionError("skipped")

    @pytest.mark.skip(reason=COMPUTED_LOCALLY)
    def test_a_provider_that_times_out_is_unavailable(self, travel: TravelTime) -> None:
        raise AssertionError("skipped")
