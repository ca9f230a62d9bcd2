"""Firestore ``Value`` protobufs ⇄ plain Python values (JSON-compatible plus datetimes).

Eventarc delivers Firestore changes as ``DocumentEventData`` protobufs (google-events). The
embedded Eventarc emulation encodes with this module, and the event publisher decodes with it, so
both sides agree with Google's wire format byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.events.cloud import firestore as fs
from google.protobuf.timestamp_pb2 import Timestamp

_MAX_INT64 = 2**63 - 1


def to_value(value: Any) -> fs.Value:
    if value is None:
        return fs.Value(null_value=0)
    if isinstance(value, bool):
        return fs.Value(boolean_value=value)
    if isinstance(value, int) and -_MAX_INT64 - 1 <= value <= _MAX_INT64:
        return fs.Value(integer_value=value)
    if isinstance(value, int | float):
        return fs.Value(double_value=float(value))
    if isinstance(value, str):
        return fs.Value(string_value=value)
    if isinstance(value, bytes):
        return fs.Value(bytes_value=value)
    if isinstance(value, datetime):
        return fs.Value(timestamp_value=timestamp(value))
    if isinstance(value, Mapping):
        return fs.Value(
            map_value=fs.MapValue(fields={str(k): to_value(v) for k, v in value.items()})
        )
    if isinstance(value, list | tuple):
        return fs.Value(array_value=fs.ArrayValue(values=[to_value(v) for v in value]))
    raise TypeError(f"cannot store a {type(value).__name__} in a Firestore document")


def to_fields(data: Mapping[str, Any]) -> dict[str, fs.Value]:
    return {str(k): to_value(v) for k, v in data.items()}


def from_value(value: fs.Value) -> Any:
    raw = fs.Value.pb(value)
    kind = raw.WhichOneof("value_type")
    if kind is None or kind == "null_value":
        return None
    if kind == "timestamp_value":
        return raw.timestamp_value.ToDatetime(tzinfo=UTC)
    if kind == "map_value":
        return from_fields(value.map_value.fields)
    if kind == "array_value":
        return [from_value(v) for v in value.array_value.values]
    if kind == "geo_point_value":
        return {"lat": raw.geo_point_value.latitude, "lng": raw.geo_point_value.longitude}
    return getattr(raw, kind)


def from_fields(fields: Mapping[str, fs.Value]) -> dict[str, Any]:
    return {name: from_value(v) for name, v in fields.items()}


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp
