"""Domain models: validated on construction, immutable, moved only through the state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pydantic
import pytest

from meridian.domain.commands import CreateShipment, DeliverParcel, RecordPing
from meridian.domain.errors import InvalidTransition
from meridian.domain.model import (
    GeoPoint,
    Parcel,
    ProofOfDelivery,
    Recipient,
    Route,
    RouteStop,
    Stop,
    TimeWindow,
)
from meridian.domain.states import ParcelStatus

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def window() -> TimeWindow:
    return TimeWindow(start=NOW, end=NOW + timedelta(hours=2))


def parcel() -> Parcel:
    return Parcel(
        parcel_id="p-1",
        shipment_id="s-1",
        client_id="c-1",
        recipient=Recipient(name="Asha", phone="+919812345678"),
        stop=Stop(location=GeoPoint(lat=12.97, lng=77.59), address="1 MG Road", window=window()),
        weight_kg=2.5,
    )


def test_a_parcel_walks_its_happy_path_as_new_values() -> None:
    created = parcel()
    planned = created.plan("w-1")
    assigned = planned.assign("r-1", "drv-7", "veh-3")
    out = assigned.send_out()
    delivered = out.deliver(
        NOW, GeoPoint(lat=12.97, lng=77.59), ProofOfDelivery(signature_ref="sig/1")
    )
    assert [p.status for p in (created, planned, assigned, out, delivered)] == [
        ParcelStatus.CREATED,
        ParcelStatus.PLANNED,
        ParcelStatus.ASSIGNED,
        ParcelStatus.OUT_FOR_DELIVERY,
        ParcelStatus.DELIVERED,
    ]
    assert created.status is ParcelStatus.CREATED  # the original is untouched
    assert out.attempts == 1
    assert delivered.pod == ProofOfDelivery(signature_ref="sig/1")
    assert (delivered.route_id, delivered.driver_id, delivered.vehicle_id) == (
        "r-1",
        "drv-7",
        "veh-3",
    )


def test_requeue_releases_route_driver_and_vehicle() -> None:
    failed = parcel().plan("w-1").assign("r-1", "drv-7", "veh-3").send_out().fail("nobody home")
    requeued = failed.requeue()
    assert requeued.status is ParcelStatus.CREATED
    assert (requeued.window_id, requeued.route_id, requeued.driver_id, requeued.vehicle_id) == (
        None,
    ) * 4
    assert requeued.attempts == 1  # the failed attempt is remembered
    assert requeued.plan("w-2").assign("r-9", "drv-1", "veh-1").send_out().attempts == 2


def test_an_illegal_move_raises_and_names_the_parcel() -> None:
    with pytest.raises(InvalidTransition, match="cannot deliver parcel p-1: it is CREATED"):
        parcel().deliver(NOW, GeoPoint(lat=0, lng=0))


def test_models_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        parcel().status = ParcelStatus.DELIVERED  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"lat": 91, "lng": 0}, "less than or equal to 90"),
        ({"lat": 0, "lng": -181}, "greater than or equal to -180"),
    ],
)
def test_coordinates_are_bounded(fields: dict[str, float], problem: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=problem):
        GeoPoint(**fields)


def test_windows_need_timezones_and_order() -> None:
    with pytest.raises(pydantic.ValidationError, match="timezone"):
        TimeWindow(start=datetime(2026, 1, 1, 9), end=datetime(2026, 1, 1, 10, tzinfo=UTC))
    with pytest.raises(pydantic.ValidationError, match="after its start"):
        TimeWindow(start=NOW, end=NOW)


def test_route_stops_must_be_sequenced() -> None:
    stop = {"parcel_id": "p-1", "location": GeoPoint(lat=1, lng=1), "window": window()}
    Route(route_id="r-1", window_id="w-1", vehicle_id="v-1", stops=(RouteStop(sequence=0, **stop),))
    with pytest.raises(pydantic.ValidationError, match="numbered"):
        Route(
            route_id="r-1",
            window_id="w-1",
            vehicle_id="v-1",
            stops=(RouteStop(sequence=1, **stop),),
        )


def test_commands_reject_every_bad_field_at_once() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        DeliverParcel.model_validate(
            {
                "parcel_id": "",
                "driver_id": "d",
                "vehicle_id": "v",
                "delivered_at": "not a time",
                "position": {},
            }
        )
    bad = {".".join(str(p) for p in e["loc"]) for e in raised.value.errors()}
    assert {"parcel_id", "delivered_at", "position.lat", "position.lng"} <= bad


def test_a_shipment_needs_at_least_one_parcel_and_pings_need_plausible_speeds() -> None:
    with pytest.raises(pydantic.ValidationError, match="at least 1"):
        CreateShipment(client_id="c-1", parcels=())
    with pytest.raises(pydantic.ValidationError, match="speed_mps"):
        RecordPing(
            vehicle_id="v-1", position=GeoPoint(lat=0, lng=0), recorded_at=NOW, speed_mps=400
        )
