"""The external ports' contracts: one suite per port that every adapter, fakes included, must
pass (``meridian.ports`` SmsGateway, BillingApi, WebhookSender, TravelTime, RouteOptimizer,
BlobStore).

Each suite names the hooks a subclass provides: how to build the adapter and, where the port has
a failure to pin, how to make its provider fail. A hook an adapter's backend cannot provide is
the only reason to skip a test there, with the reason written next to it.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meridian.domain.errors import NotFound, Unavailable, ValidationError
from meridian.ports import (
    BillingApi,
    BlobStore,
    Charge,
    GeoPoint,
    RouteOptimizer,
    RoutingProblem,
    RoutingSolution,
    SmsGateway,
    TravelTime,
    WebhookSender,
)

TIMEOUT_S = 0.3  # the adapters' timeout where a test makes the provider slower than it
GUARD_S = 5.0  # how long a timed-out call may take at most: a guard, not a timing assertion


def _key(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


# SmsGateway --------------------------------------------------------------------------------------


class SmsGatewayContract:
    def make_gateway(self) -> SmsGateway:
        """An adapter whose calls time out after at most TIMEOUT_S."""
        raise NotImplementedError

    def sent(self) -> list[tuple[str, str]]:
        """``(to, body)`` of every message the provider has sent, in order."""
        raise NotImplementedError

    def fail(self) -> None:
        """Make the provider fail every call until ``recover``."""
        raise NotImplementedError

    def slow(self) -> None:
        """Make the provider answer later than the adapter's timeout until ``recover``."""
        raise NotImplementedError

    def recover(self) -> None:
        raise NotImplementedError

    @pytest.fixture
    def gateway(self) -> SmsGateway:
        return self.make_gateway()

    def test_a_message_is_sent_and_receipted(self, gateway: SmsGateway) -> None:
        receipt = gateway.send("+919800000001", "Your parcel is out for delivery", _key("sms"))

        assert receipt.message_id
        assert receipt.accepted_at.utcoffset() == timedelta(0)
        assert self.sent() == [("+919800000001", "Your parcel is out for delivery")]

    def test_the_same_key_never_sends_twice(self, gateway: SmsGateway) -> None:
        key = _key("sms")
        first = gateway.send("+919800000001", "Arriving in 10 minutes", key)
        again = gateway.send("+919800000001", "Arriving in 10 minutes", key)
        other = gateway.send("+919800000001", "Arriving in 10 minutes", _key("sms"))

        assert again.message_id == first.message_id
        assert other.message_id != first.message_id
        assert self.sent() == [("+919800000001", "Arriving in 10 minutes")] * 2

    def test_a_failing_gateway_is_unavailable_and_its_retry_sends_once(
        self, gateway: SmsGateway
    ) -> None:
        key = _key("sms")
        self.fail()
        with pytest.raises(Unavailable):
            gateway.send("+919800000001", "Delivered", key)
        self.recover()

        gateway.send("+919800000001", "Delivered", key)

        assert self.sent() == [("+919800000001", "Delivered")]

    def test_a_gateway_that_times_out_is_unavailable_and_its_retry_sends_once(
        self, gateway: SmsGateway
    ) -> None:
        key = _key("sms")
        self.slow()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            gateway.send("+919800000001", "Delivered", key)
        assert time.monotonic() - started < GUARD_S
        self.recover()

        first = gateway.send("+919800000001", "Delivered", key)
        again = gateway.send("+919800000001", "Delivered", key)

        assert again.message_id == first.message_id
        assert self.sent() == [("+919800000001", "Delivered")]


# BillingApi --------------------------------------------------------------------------------------


def _charge(reference: str = "p-1", amount_minor: int = 4_900) -> Charge:
    return Charge("client-1", reference, amount_minor, "INR", "Same-day delivery")


class BillingApiContract:
    def make_billing(self) -> BillingApi:
        """An adapter whose calls time out after at most TIMEOUT_S."""
        raise NotImplementedError

    def charged(self) -> list[tuple[str, int]]:
        """``(reference, amount_minor)`` of every charge the API has posted, in order."""
        raise NotImplementedError

    def fail(self) -> None:
        raise NotImplementedError

    def slow(self) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        raise NotImplementedError

    @pytest.fixture
    def billing(self) -> BillingApi:
        return self.make_billing()

    def test_a_charge_is_posted_and_its_id_returned(self, billing: BillingApi) -> None:
        charge_id = billing.charge(_charge(), _key("bill"))

        assert charge_id
        assert self.charged() == [("p-1", 4_900)]

    def test_the_same_key_never_charges_twice(self, billing: BillingApi) -> None:
        key = _key("bill")
        first = billing.charge(_charge(), key)
        again = billing.charge(_charge(), key)
        other = billing.charge(_charge("p-2"), _key("bill"))

        assert again == first
        assert other != first
        assert self.charged() == [("p-1", 4_900), ("p-2", 4_900)]

    def test_a_failing_api_is_unavailable_and_its_retry_charges_once(
        self, billing: BillingApi
    ) -> None:
        key = _key("bill")
        self.fail()
        with pytest.raises(Unavailable):
            billing.charge(_charge(), key)
        self.recover()

        billing.charge(_charge(), key)

        assert self.charged() == [("p-1", 4_900)]

    def test_an_api_that_times_out_is_unavailable_and_its_retry_charges_once(
        self, billing: BillingApi
    ) -> None:
        key = _key("bill")
        self.slow()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            billing.charge(_charge(), key)
        assert time.monotonic() - started < GUARD_S
        self.recover()

        first = billing.charge(_charge(), key)
        again = billing.charge(_charge(), key)

        assert again == first
        assert self.charged() == [("p-1", 4_900)]


# WebhookSender -----------------------------------------------------------------------------------


class WebhookSenderContract:
    def make_sender(self) -> WebhookSender:
        raise NotImplementedError

    def answering(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> str:
        """The URL of an endpoint that answers ``status`` with ``headers`` and ``body``."""
        raise NotImplementedError

    def received(self) -> list[tuple[str, dict[str, str], bytes]]:
        """``(url, headers with lower-case names, body)`` of every request endpoints received."""
        raise NotImplementedError

    def redirecting(self) -> tuple[str, str]:
        """The URL of an endpoint answering 307 to another endpoint, and that other URL."""
        raise NotImplementedError

    def refusing(self) -> str:
        """The URL of an address where nothing listens."""
        raise NotImplementedError

    def silent(self) -> str:
        """The URL of an endpoint that answers later than any timeout of these tests."""
        raise NotImplementedError

    @pytest.fixture
    def sender(self) -> WebhookSender:
        return self.make_sender()

    def test_one_post_answers_its_status_and_headers(self, sender: WebhookSender) -> None:
        url = self.answering(204, {"X-Request-Id": "r-1"})

        response = sender.send(url, {"webhook-id": "evt-1"}, b'{"type":"parcel.delivered"}', 5.0)

        assert response.status == 204
        assert response.headers["x-request-id"] == "r-1"
        assert all(name == name.lower() for name in response.headers)
        [(got_url, headers, body)] = self.received()
        assert got_url == url
        assert headers["webhook-id"] == "evt-1"
        assert body == b'{"type":"parcel.delivered"}'

    @pytest.mark.parametrize("status", [400, 410, 429, 500, 503])
    def test_an_error_status_is_answered_not_raised(
        self, sender: WebhookSender, status: int
    ) -> None:
        url = self.answering(status, {"Retry-After": "120"})

        response = sender.send(url, {}, b"{}", 5.0)

        assert response.status == status
        assert response.headers["retry-after"] == "120"

    def test_the_body_answered_is_kept_up_to_4_kib(self, sender: WebhookSender) -> None:
        answer = b"ok " * 3000
        response = sender.send(self.answering(200, {}, answer), {}, b"{}", 5.0)

        assert len(response.body) <= 4096
        assert answer.startswith(response.body)

    def test_a_redirect_is_answered_not_followed(self, sender: WebhookSender) -> None:
        url, target = self.redirecting()

        response = sender.send(url, {}, b"{}", 5.0)

        assert response.status == 307
        assert response.headers["location"] == target
        assert [u for u, _, _ in self.received()] == [url]

    def test_a_refused_connection_is_unavailable(self, sender: WebhookSender) -> None:
        with pytest.raises(Unavailable):
            sender.send(self.refusing(), {}, b"{}", 5.0)

    def test_no_answer_within_the_timeout_is_unavailable(self, sender: WebhookSender) -> None:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            sender.send(self.silent(), {}, b"{}", TIMEOUT_S)
        assert time.monotonic() - started < GUARD_S


# TravelTime --------------------------------------------------------------------------------------

MG_ROAD = GeoPoint(lat=12.9756, lng=77.6050)
KORAMANGALA = GeoPoint(lat=12.9352, lng=77.6245)
WHITEFIELD = GeoPoint(lat=12.9698, lng=77.7500)


def _tomorrow_at(hour: int) -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


class TravelTimeContract:
    def make_travel_time(self) -> TravelTime:
        raise NotImplementedError

    def fail(self) -> None:
        """Make the provider fail every call."""
        raise NotImplementedError

    def slow(self) -> None:
        """Make the provider answer later than the adapter's timeout."""
        raise NotImplementedError

    @pytest.fixture
    def travel(self) -> TravelTime:
        return self.make_travel_time()

    def test_positive_and_finite_between_two_points(self, travel: TravelTime) -> None:
        for depart_at in (_tomorrow_at(3), _tomorrow_at(9), _tomorrow_at(18)):
            seconds = travel.seconds(MG_ROAD, KORAMANGALA, depart_at)
            assert 0 < seconds < math.inf

    def test_zero_from_a_point_to_itself(self, travel: TravelTime) -> None:
        assert travel.seconds(MG_ROAD, MG_ROAD, _tomorrow_at(9)) == 0

    def test_roughly_symmetric(self, travel: TravelTime) -> None:
        depart_at = _tomorrow_at(11)
        there = travel.seconds(MG_ROAD, WHITEFIELD, depart_at)
        back = travel.seconds(WHITEFIELD, MG_ROAD, depart_at)
        assert there / 1.5 <= back <= there * 1.5

    def test_a_departure_in_the_past_is_answered(self, travel: TravelTime) -> None:
        yesterday = datetime.now(UTC) - timedelta(days=1)
        assert travel.seconds(MG_ROAD, KORAMANGALA, yesterday) > 0

    def test_a_failing_provider_is_unavailable(self, travel: TravelTime) -> None:
        self.fail()
        with pytest.raises(Unavailable):
            travel.seconds(MG_ROAD, KORAMANGALA, _tomorrow_at(9))

    def test_a_provider_that_times_out_is_unavailable(self, travel: TravelTime) -> None:
        self.slow()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            travel.seconds(MG_ROAD, KORAMANGALA, _tomorrow_at(9))
        assert time.monotonic() - started < GUARD_S


# RouteOptimizer ----------------------------------------------------------------------------------

DEPOT = GeoPoint(lat=12.9716, lng=77.5946)
STARTS_AT = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
SOLVE_S = 0.3


def stop(
    n: int, weight_kg: float = 2.0, opens_h: float = 0.0, closes_h: float = 8.0
) -> dict[str, Any]:
    """Stop ``n`` a few kilometres around the depot, its window in hours after STARTS_AT."""
    return {
        "id": f"p{n}",
        "lat": DEPOT.lat + 0.01 * ((n % 5) - 2),
        "lng": DEPOT.lng + 0.01 * ((n // 5 % 5) - 2),
        "weight_kg": weight_kg,
        "window_start": STARTS_AT + timedelta(hours=opens_h),
        "window_end": STARTS_AT + timedelta(hours=closes_h),
    }


def vehicle(n: int, capacity_kg: float = 50.0, capacity_parcels: int = 10) -> dict[str, Any]:
    return {"id": f"v{n}", "capacity_kg": capacity_kg, "capacity_parcels": capacity_parcels}


def problem(stops: Sequence[dict[str, Any]], vehicles: Sequence[dict[str, Any]]) -> RoutingProblem:
    return RoutingProblem(DEPOT, stops, vehicles, STARTS_AT)


class RouteOptimizerContract:
    def make_optimizer(self) -> RouteOptimizer:
        raise NotImplementedError

    def fail(self) -> None:
        """Make the optimizer fail every solve."""
        raise NotImplementedError

    @pytest.fixture
    def optimizer(self) -> RouteOptimizer:
        return self.make_optimizer()

    def assert_sound(self, solved: RoutingSolution, asked: RoutingProblem) -> None:
        """Every stop once, in a route or unserved with a reason; routes inside windows and
        capacities."""
        stops = {s["id"]: s for s in asked.stops}
        vehicles = {v["id"]: v for v in asked.vehicles}
        routed = [visit["id"] for route in solved.routes for visit in route["stops"]]
        unserved = [u["id"] for u in solved.unserved]
        assert sorted(routed + unserved) == sorted(stops)
        assert all(isinstance(u["reason"], str) and u["reason"] for u in solved.unserved)
        assert len({r["vehicle_id"] for r in solved.routes}) == len(solved.routes)
        for route in solved.routes:
            capacity = vehicles[route["vehicle_id"]]
            visits = route["stops"]
            assert visits, "a route serves at least one stop"
            assert [v["sequence"] for v in visits] == list(range(len(visits)))
            assert route["duration_s"] >= 0
            for visit in visits:
                wanted = stops[visit["id"]]
                assert visit["eta"].utcoffset() is not None
                assert wanted["window_start"] <= visit["eta"] <= wanted["window_end"]
            assert sum(stops[v["id"]]["weight_kg"] for v in visits) <= capacity["capacity_kg"]
            assert len(visits) <= capacity["capacity_parcels"]

    def test_servable_stops_are_routed(self, optimizer: RouteOptimizer) -> None:
        asked = problem([stop(n) for n in range(6)], [vehicle(1), vehicle(2)])

        solved = optimizer.solve(asked, SOLVE_S)

        self.assert_sound(solved, asked)
        assert solved.unserved == []
        assert solved.solve_seconds >= 0

    def test_more_parcels_than_capacity_are_listed_not_dropped(
        self, optimizer: RouteOptimizer
    ) -> None:
        asked = problem([stop(n) for n in range(7)], [vehicle(1, capacity_parcels=3)])

        solved = optimizer.solve(asked, SOLVE_S)

        self.assert_sound(solved, asked)
        assert len(solved.unserved) == 4

    def test_a_stop_too_heavy_for_any_vehicle_is_unserved_with_a_reason(
        self, optimizer: RouteOptimizer
    ) -> None:
        asked = problem([stop(0), stop(1, weight_kg=80.0)], [vehicle(1), vehicle(2)])

        solved = optimizer.solve(asked, SOLVE_S)

        self.assert_sound(solved, asked)
        assert [u["id"] for u in solved.unserved] == ["p1"]

    def test_a_window_closed_before_the_start_is_unserved_with_a_reason(
        self, optimizer: RouteOptimizer
    ) -> None:
        asked = problem([stop(0), stop(1, opens_h=-3, closes_h=-1)], [vehicle(1)])

        solved = optimizer.solve(asked, SOLVE_S)

        self.assert_sound(solved, asked)
        assert [u["id"] for u in solved.unserved] == ["p1"]

    def test_without_vehicles_every_stop_is_unserved(self, optimizer: RouteOptimizer) -> None:
        asked = problem([stop(0), stop(1)], [])

        solved = optimizer.solve(asked, SOLVE_S)

        self.assert_sound(solved, asked)
        assert solved.routes == [] and len(solved.unserved) == 2

    def test_no_stops_no_routes(self, optimizer: RouteOptimizer) -> None:
        solved = optimizer.solve(problem([], [vehicle(1)]), SOLVE_S)
        assert (list(solved.routes), list(solved.unserved)) == ([], [])

    @pytest.mark.parametrize("time_limit_s", [0.0, -1.0])
    def test_a_time_limit_that_is_not_positive_is_refused(
        self, optimizer: RouteOptimizer, time_limit_s: float
    ) -> None:
        with pytest.raises(ValidationError):
            optimizer.solve(problem([stop(0)], [vehicle(1)]), time_limit_s)

    def test_a_failing_optimizer_is_unavailable(self, optimizer: RouteOptimizer) -> None:
        self.fail()
        with pytest.raises(Unavailable):
            optimizer.solve(problem([stop(0)], [vehicle(1)]), SOLVE_S)


# BlobStore ---------------------------------------------------------------------------------------


class BlobStoreContract:
    def make_blobs(self) -> BlobStore:
        raise NotImplementedError

    def foreign_reference(self) -> str:
        """A well-formed reference that belongs to another store."""
        raise NotImplementedError

    @pytest.fixture
    def blobs(self) -> Iterator[BlobStore]:
        yield self.make_blobs()

    def test_put_then_get_round_trips(self, blobs: BlobStore) -> None:
        data = bytes(range(256)) * 4
        reference = blobs.put(_key("pod/p-1/photo") + ".jpg", data, "image/jpeg")

        assert blobs.get(reference) == data
        assert blobs.exists(reference)
        assert self.make_blobs().get(reference) == data  # another client reads it too

    def test_putting_a_key_again_replaces_its_data(self, blobs: BlobStore) -> None:
        key = _key("pod/p-1/signature") + ".png"
        first = blobs.put(key, b"first", "image/png")
        second = blobs.put(key, b"second", "image/png")

        assert second == first
        assert blobs.get(first) == b"second"

    def test_an_empty_blob_is_a_blob(self, blobs: BlobStore) -> None:
        reference = blobs.put(_key("pod/empty"), b"", "application/octet-stream")
        assert blobs.exists(reference) and blobs.get(reference) == b""

    def test_an_unknown_reference_is_not_found(self, blobs: BlobStore) -> None:
        reference = blobs.put(_key("pod/known"), b"x", "text/plain")
        unknown = reference + "-never-put"

        assert not blobs.exists(unknown)
        with pytest.raises(NotFound):
            blobs.get(unknown)

    def test_another_stores_reference_is_not_found(self, blobs: BlobStore) -> None:
        foreign = self.foreign_reference()

        assert not blobs.exists(foreign)
        with pytest.raises(NotFound):
            blobs.get(foreign)

    @pytest.mark.parametrize("key", ["", "/etc/passwd", "pod/../../escape", "pod/../p-1"])
    def test_a_key_that_is_empty_absolute_or_climbs_is_refused(
        self, blobs: BlobStore, key: str
    ) -> None:
        with pytest.raises(ValidationError):
            blobs.put(key, b"x", "text/plain")
