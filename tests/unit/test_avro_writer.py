"""The compiled Avro writer gives fastavro's bytes for every catalog schema it compiles, and
refuses (so the codec falls back to fastavro) whatever it does not encode exactly as fastavro."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.catalog import load_catalog
from meridian.codec.avro_writer import compile_writer, encode_long
from meridian.codec.events import EventCodec
from meridian.domain.errors import ValidationError
from meridian.domain.events import EVENT_TYPES
from tests.strategies import model_strategy

CATALOG = load_catalog()
CODEC = EventCodec(CATALOG)
COMPILED = sorted(name for name, schema in CATALOG.schemas.items() if compile_writer(schema))


def fastavro_bytes(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def test_the_flat_event_schemas_compile_and_the_others_fall_back() -> None:
    assert "VehiclePing" in COMPILED and "ParcelDelivered" in COMPILED
    # Arrays are not compiled: these keep fastavro.
    assert compile_writer(CATALOG.schemas["ShipmentCreated"]) is None
    assert (
        compile_writer({"type": "record", "name": "R", "fields": [{"name": "b", "type": "bytes"}]})
        is None
    )


@given(value=st.integers(min_value=-(2**63), max_value=2**63 - 1))
@settings(max_examples=500)
def test_longs_are_fastavro_zigzag_varints(value: int) -> None:
    assert encode_long(value) == fastavro_bytes("long", value)


@pytest.mark.parametrize(
    "value", [0, -1, 63, -64, 64, 2**55 - 1, 2**55, -(2**55) - 1, 2**63 - 1, -(2**63)]
)
def test_long_boundaries(value: int) -> None:
    assert encode_long(value) == fastavro_bytes("long", value)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 1.5, "1", None])
def test_longs_out_of_range_or_not_integers_are_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_long(value)


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_every_compiled_event_type_encodes_as_fastavro_does(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(COMPILED))
    event = data.draw(model_strategy(EVENT_TYPES[name]))
    record = event.model_dump(mode="python")
    writer = compile_writer(CATALOG.schemas[name])
    assert writer is not None
    assert writer(record) == fastavro_bytes(CATALOG.schemas[name], record)


PING = {
    "event_id": "evt-1",
    "occurred_at": datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
    "vehicle_id": "veh-é",  # non-ASCII: lengths are in bytes
    "driver_id": None,
    "lat": 12.9,
    "lng": 77,  # an int where a double is declared: fastavro writes it as a double too
    "heading_deg": None,
    "speed_mps": 8.5,
    "accuracy_m": 3,
    "recorded_at": datetime(2026, 11, 21, 15, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
}


def test_a_ping_with_unicode_ints_for_doubles_and_another_time_zone() -> None:
    schema = CATALOG.schemas["VehiclePing"]
    writer = compile_writer(schema)
    assert writer is not None
    assert writer(PING) == fastavro_bytes(schema, PING)


@pytest.mark.parametrize(
    "change",
    [
        {"lat": "12.9"},  # a string for a double
        {"vehicle_id": 7},  # a number for a string
        {"driver_id": 7},  # a wrong type inside an optional field
        {"recorded_at": datetime(2026, 11, 21, 9, 30)},  # naive: fastavro's own reading applies
        {"occurred_at": True},
    ],
)
def test_values_it_does_not_encode_exactly_are_refused(change: dict[str, Any]) -> None:
    writer = compile_writer(CATALOG.schemas["VehiclePing"])
    assert writer is not None
    with pytest.raises((TypeError, ValueError)):
        writer({**PING, **change})


def test_a_missing_field_is_refused() -> None:
    writer = compile_writer(CATALOG.schemas["VehiclePing"])
    assert writer is not None
    with pytest.raises(KeyError):
        writer({k: v for k, v in PING.items() if k != "lat"})


def test_the_codec_falls_back_to_fastavro_which_decides() -> None:
    # A naive time: the compiled writer refuses, fastavro encodes it (as UTC).
    naive = {**PING, "recorded_at": datetime(2026, 11, 21, 9, 30)}
    assert CODEC.encode_record("VehiclePing", naive) == fastavro_bytes(
        CATALOG.schemas["VehiclePing"], naive
    )
    # A wrong type: both refuse, and the codec explains with fastavro's validator.
    with pytest.raises(ValidationError, match="VehiclePing does not match its schema"):
        CODEC.encode_record("VehiclePing", {**PING, "lat": "north"})


def test_a_time_shared_by_a_batch_is_encoded_right_each_time() -> None:
    # The writer remembers the last datetime it encoded; alternating times must not mix up.
    schema = CATALOG.schemas["VehiclePing"]
    writer = compile_writer(schema)
    assert writer is not None
    shared = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    records = [
        {**PING, "occurred_at": shared, "recorded_at": shared + timedelta(seconds=i)}
        for i in range(3)
    ]
    for record in records + records[::-1]:
        assert writer(record) == fastavro_bytes(schema, record)
