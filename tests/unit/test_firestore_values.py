"""The Firestore value mapping against google-events' own protobuf classes, both ways: what the
codec encodes, google-events reads as the Firestore value it means (the same bytes as the value
built with google-events), and what google-events builds, the codec reads back."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.events.cloud import firestore as fs
from google.protobuf.struct_pb2 import NULL_VALUE
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.latlng_pb2 import LatLng

from meridian.codec.firestore_values import (
    RawValue,
    decode,
    decode_document_event,
    encode_document_event,
    fill,
    from_fields,
    to_fields,
)
from meridian.domain.errors import DecodeError

AT = datetime(2026, 11, 21, 9, 30, 15, 123456, tzinfo=UTC)


def encoded(value: Any) -> bytes:
    raw = RawValue()
    fill(raw, value)
    return bytes(raw.SerializeToString())


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


# (Python value, the google-events Value that means it)
SCALARS: list[tuple[Any, fs.Value]] = [
    (None, fs.Value(null_value=NULL_VALUE)),
    (True, fs.Value(boolean_value=True)),
    (False, fs.Value(boolean_value=False)),
    (0, fs.Value(integer_value=0)),
    (-(2**63), fs.Value(integer_value=-(2**63))),
    (2**63 - 1, fs.Value(integer_value=2**63 - 1)),
    (1.5, fs.Value(double_value=1.5)),
    (-0.0, fs.Value(double_value=-0.0)),
    (math.inf, fs.Value(double_value=math.inf)),
    (-math.inf, fs.Value(double_value=-math.inf)),
    ("", fs.Value(string_value="")),
    ("vëhicle 🚚", fs.Value(string_value="vëhicle 🚚")),
    (b"", fs.Value(bytes_value=b"")),
    (b"\x00\xff", fs.Value(bytes_value=b"\x00\xff")),
    (AT, fs.Value(timestamp_value=stamp(AT))),
    ([], fs.Value(array_value=fs.ArrayValue(values=[]))),
    ({}, fs.Value(map_value=fs.MapValue(fields={}))),
    (
        [1, "two", None, [3.5]],
        fs.Value(
            array_value=fs.ArrayValue(
                values=[
                    fs.Value(integer_value=1),
                    fs.Value(string_value="two"),
                    fs.Value(null_value=NULL_VALUE),
                    fs.Value(array_value=fs.ArrayValue(values=[fs.Value(double_value=3.5)])),
                ]
            )
        ),
    ),
    (
        {"stop": {"location": {"lat": 12.97}}},
        fs.Value(
            map_value=fs.MapValue(
                fields={
                    "stop": fs.Value(
                        map_value=fs.MapValue(
                            fields={
                                "location": fs.Value(
                                    map_value=fs.MapValue(
                                        fields={"lat": fs.Value(double_value=12.97)}
                                    )
                                )
                            }
                        )
                    )
                }
            )
        ),
    ),
]


@pytest.mark.parametrize(("value", "google"), SCALARS, ids=[repr(v)[:30] for v, _ in SCALARS])
def test_the_codec_encodes_what_google_events_builds_byte_for_byte(
    value: Any, google: fs.Value
) -> None:
    assert encoded(value) == fs.Value.serialize(google)
    assert fs.Value.deserialize(encoded(value)) == google


@pytest.mark.parametrize(("value", "google"), SCALARS, ids=[repr(v)[:30] for v, _ in SCALARS])
def test_the_codec_reads_what_google_events_builds(value: Any, google: fs.Value) -> None:
    raw = RawValue.FromString(fs.Value.serialize(google))
    read = decode(raw)
    assert read == value and type(read) is type(value)


def test_nan_both_ways() -> None:
    google = fs.Value.deserialize(encoded(math.nan))
    assert math.isnan(google.double_value)
    assert math.isnan(decode(RawValue.FromString(fs.Value.serialize(google))))


def test_numbers_beyond_64_bits_are_doubles_and_times_are_utc() -> None:
    assert fs.Value.deserialize(encoded(2**64)).double_value == float(2**64)
    assert fs.Value.deserialize(encoded(-(2**63) - 1)).double_value == float(-(2**63) - 1)
    india = AT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert encoded(india) == encoded(AT)
    assert decode(RawValue.FromString(encoded(india))).tzinfo is UTC


def test_a_timestamp_with_nanoseconds_reads_to_the_microsecond() -> None:
    google = fs.Value(timestamp_value=Timestamp(seconds=int(AT.timestamp()), nanos=123_456_789))
    assert decode(RawValue.FromString(fs.Value.serialize(google))) == AT.replace(
        microsecond=123_456
    )


def test_geo_points_and_references_written_by_others_are_read() -> None:
    # Meridian never writes either (positions are {"lat", "lng"} maps), but reads both.
    point = fs.Value(geo_point_value=LatLng(latitude=12.97, longitude=77.59))
    assert decode(RawValue.FromString(fs.Value.serialize(point))) == {"lat": 12.97, "lng": 77.59}
    name = "projects/p/databases/(default)/documents/parcels/p-1"
    reference = fs.Value(reference_value=name)
    assert decode(RawValue.FromString(fs.Value.serialize(reference))) == name


def test_what_firestore_cannot_store_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot store a set"):
        encoded({1, 2})


def test_the_proto_plus_helpers_are_the_same_mapping() -> None:
    data = {value_id: value for value_id, (value, _) in enumerate(SCALARS)}
    fields = to_fields({str(k): v for k, v in data.items()})
    assert {k: fs.Value.serialize(v) for k, v in fields.items()} == {
        str(k): fs.Value.serialize(google) for k, (_, google) in enumerate(SCALARS)
    }
    assert from_fields(fields) == {str(k): v for k, v in data.items()}


def test_a_document_event_round_trips_through_google_events() -> None:
    name = "projects/proj/databases/(default)/documents/parcels/p-1"
    old, new = {"status": "OUT_FOR_DELIVERY", "n": 1}, {"status": "DELIVERED", "n": 2, "at": AT}
    body = encode_document_event(
        name,
        value=new,
        old_value=old,
        create_time=AT,
        update_time=AT + timedelta(seconds=3),
        old_update_time=AT,
        update_mask=["status", "n", "at"],
    )
    google = fs.DocumentEventData.deserialize(body)
    assert google.value.name == google.old_value.name == name
    assert google.value.fields["status"].string_value == "DELIVERED"
    assert google.value.update_time == AT + timedelta(seconds=3)
    assert list(google.update_mask.field_paths) == ["status", "n", "at"]
    assert decode_document_event(fs.DocumentEventData.serialize(google)) == (
        old,
        new,
        AT + timedelta(seconds=3),
    )
    created = encode_document_event(
        name,
        value=new,
        old_value=None,
        create_time=AT,
        update_time=AT,
        old_update_time=AT,
        update_mask=None,
    )
    raw = fs.DocumentEventData.pb(fs.DocumentEventData.deserialize(created))
    assert not raw.HasField("old_value") and not raw.HasField("update_mask")
    assert decode_document_event(created) == (None, new, AT)
    with pytest.raises(DecodeError, match="not a DocumentEventData"):
        decode_document_event(b"\xff\xff\xff")
