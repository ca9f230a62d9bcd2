"""The live map's compiled ping reader must read exactly what the generic codec reads: the same
Position from a valid ping, and DecodeError for every body or attribute set the codec refuses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from meridian.catalog import load_catalog
from meridian.codec.avro_reader import UnsupportedSchema, compile_type, read_long
from meridian.codec.events import EventCodec
from meridian.domain.errors import DecodeError
from meridian.domain.events import GeofenceCrossed, VehiclePing
from meridian.ports import Message
from services.live_map.pings import PingDecoder
from services.live_map.positions import Position

T0 = datetime(2026, 11, 21, 9, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec(load_catalog())


@pytest.fixture(scope="module")
def pings() -> PingDecoder:
    return PingDecoder(load_catalog())


def ping(**overrides: object) -> VehiclePing:
    fields: dict[str, object] = {
        "event_id": "evt-1",
        "occurred_at": T0,
        "vehicle_id": "veh-00042",
        "driver_id": "drv-7",
        "lat": 12.9716,
        "lng": 77.5946,
        "heading_deg": 271.5,
        "speed_mps": 8.25,
        "accuracy_m": 4.0,
        "recorded_at": T0 - timedelta(seconds=3),
    }
    fields.update(overrides)
    return VehiclePing.model_validate(fields)


def generic(codec: EventCodec, message: Message) -> Position:
    event = codec.from_message(message.data, message.attributes)
    assert isinstance(event, VehiclePing)
    return Position.of(event)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"driver_id": None, "heading_deg": None, "speed_mps": None, "accuracy_m": None},
        {"lat": -90.0, "lng": 180.0},
        {"recorded_at": datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC)},  # negative micros
        {"recorded_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
        {"vehicle_id": "vëhicle-ünïcode-🚚", "event_id": "e" * 128},
    ],
)
def test_a_valid_ping_reads_as_the_codec_reads_it(
    codec: EventCodec, pings: PingDecoder, overrides: dict[str, object]
) -> None:
    message = codec.to_message(ping(**overrides))
    assert pings.decode(message.data, message.attributes) == generic(codec, message)


@pytest.mark.parametrize(
    "attributes",
    [
        {"eventType": "VehiclePing", "schemaVersion": "2"},
        {"eventType": "VehiclePing", "eventId": "someone-else"},
        {"schemaVersion": "1"},
    ],
    ids=["newer schema", "event id mismatch", "no event type"],
)
def test_attributes_the_codec_refuses_are_refused(
    codec: EventCodec, pings: PingDecoder, attributes: dict[str, str]
) -> None:
    message = codec.to_message(ping())
    with pytest.raises(DecodeError):
        codec.from_message(message.data, attributes)
    with pytest.raises(DecodeError):
        pings.decode(message.data, attributes)


def test_another_event_type_is_not_a_ping(codec: EventCodec, pings: PingDecoder) -> None:
    crossed = GeofenceCrossed.model_validate(
        {
            "event_id": "evt-2",
            "occurred_at": T0,
            "vehicle_id": "veh-1",
            "geofence_id": "depot",
            "direction": "ENTER",
            "crossed_at": T0,
            "lat": 12.9,
            "lng": 77.5,
            "dwell_seconds": 0.0,
        }
    )
    message = codec.to_message(crossed)
    with pytest.raises(DecodeError, match="not a VehiclePing"):
        pings.decode(message.data, message.attributes)


def test_corrupt_bodies_are_refused_exactly_when_the_codec_refuses_them(
    codec: EventCodec, pings: PingDecoder
) -> None:
    message = codec.to_message(ping())
    rnd = random.Random(7)
    for _ in range(3000):
        body = bytearray(message.data)
        for _ in range(rnd.randint(1, 3)):
            roll = rnd.random() if body else 1.0
            if roll < 0.5:
                body[rnd.randrange(len(body))] = rnd.randrange(256)
            elif roll < 0.75:
                del body[rnd.randrange(len(body)) :]
            else:
                body.append(rnd.randrange(256))
        data = bytes(body)
        try:
            expected: Position | None = generic(codec, Message(data, message.attributes))
        except DecodeError:
            expected = None
        try:
            got: Position | None = pings.decode(data, message.attributes)
        except DecodeError:
            got = None
        assert got == expected, data.hex()


def _zigzag_varint(value: int) -> bytes:
    encoded = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        low, encoded = encoded & 0x7F, encoded >> 7
        out.append(low | (0x80 if encoded else 0))
        if not encoded:
            return bytes(out)


def test_longs_of_every_length_are_read_and_truncated_ones_refused() -> None:
    rnd = random.Random(3)
    for _ in range(5000):
        value = rnd.choice(
            [
                rnd.randrange(-(2**63), 2**63),
                rnd.randrange(-(2**55), 2**55),
                rnd.randrange(-300, 300),
            ]
        )
        encoded = _zigzag_varint(value)
        data = b"\x07" + encoded + bytes(rnd.randrange(256) for _ in range(rnd.randrange(10)))
        assert read_long(data, 1) == (value, 1 + len(encoded))
        if len(encoded) > 1:
            with pytest.raises(IndexError):
                read_long(b"\x07" + encoded[:-1], 1)


@pytest.mark.parametrize(
    "avro_type",
    [
        {"type": "array", "items": "string"},
        {"type": "bytes", "logicalType": "decimal", "precision": 4},
        ["null", {"type": "record", "name": "Fix", "fields": []}],
    ],
)
def test_types_the_reader_does_not_know_are_not_compiled(avro_type: object) -> None:
    # PingDecoder then leaves the schema to the generic codec rather than misread it.
    with pytest.raises(UnsupportedSchema):
        compile_type(avro_type)
