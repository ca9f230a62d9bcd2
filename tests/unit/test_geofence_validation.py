"""Decoding pings off the wire: the Avro body the command service publishes, read into a Ping."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import VehiclePing
from pipelines.geofence.model import Ping, Rejected
from pipelines.geofence.validation import PingDecoder

CATALOG = load_catalog()


def test_a_published_ping_decodes_with_its_own_time_to_the_microsecond() -> None:
    recorded = datetime(2026, 11, 21, 8, 30, 15, 123456, tzinfo=UTC)
    message = EventCodec(CATALOG).to_message(
        VehiclePing(
            event_id="e-1",
            occurred_at=datetime(2026, 11, 21, 8, 30, 16, tzinfo=UTC),
            vehicle_id="veh-7",
            lat=52.51,
            lng=13.41,
            recorded_at=recorded,
            speed_mps=4.5,
            accuracy_m=6.0,
        )
    )

    ping = PingDecoder(CATALOG).decode(message.data, message.attributes)

    assert ping == Ping("veh-7", "e-1", recorded.timestamp(), 52.51, 13.41, 4.5, 6.0)


def test_a_corrupt_or_foreign_body_is_rejected_with_the_reason() -> None:
    decoder = PingDecoder(CATALOG)

    corrupt = decoder.decode(b"\x02", {"eventType": "VehiclePing"})
    foreign = decoder.decode(b"", {"eventType": "ParcelDelivered"})

    assert isinstance(corrupt, Rejected) and corrupt.reason.startswith("undecodable VehiclePing")
    assert isinstance(foreign, Rejected) and "not a VehiclePing" in foreign.reason
