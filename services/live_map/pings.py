"""Decode ``VehiclePing`` messages straight into map ``Position``s, cheaply.

At the morning peak the writer decodes 5,100 pings a second on a machine it shares with the
simulator and the broker. The generic path (``EventCodec.from_message``: the Avro body, then a
pydantic ``VehiclePing``) cost ~34 µs a ping when this decoder was written, ~9 µs today; this
decoder reads the body with the compiled Avro reader (``meridian.codec.avro_reader``, compiled
once from the same catalog schema: no second copy of the layout) and builds the ``Position``
directly, without the model: ~8 µs then, ~6.6 µs today (interleaved medians, process time).
It makes the same checks: the attributes' event type, schema version and event id, the whole
body consumed, UTF-8 strings, and the model's constraints on what the map uses (non-empty event
id, latitude and longitude in range). Anything it cannot read raises
``DecodeError`` like the codec does, so the message is nacked and dead-lettered as before.

A schema using an Avro type the compiled reader does not know (records, arrays, maps, fixed,
other logical types) is not compiled; the generic codec is used instead, so a future schema
change is never misread, only decoded more slowly.
"""

from __future__ import annotations

from collections.abc import Mapping

from meridian.catalog import Catalog
from meridian.codec.avro_reader import compile_reader
from meridian.codec.events import EventCodec
from meridian.domain.errors import DecodeError
from meridian.domain.events import VehiclePing
from services.live_map.positions import Position

EVENT_TYPE = "VehiclePing"


class PingDecoder:
    """``VehiclePing`` message → ``Position``, or DecodeError."""

    def __init__(self, catalog: Catalog) -> None:
        self._codec = EventCodec(catalog)
        self._version = str(catalog.event_types[EVENT_TYPE].version)
        # None for a schema the compiled reader does not know: the generic codec reads it.
        self._body = compile_reader(catalog.schemas[EVENT_TYPE])

    def decode(self, data: bytes, attributes: Mapping[str, str]) -> Position:
        event_type = attributes.get("eventType")
        if event_type != EVENT_TYPE or self._body is None:
            event = self._codec.from_message(data, attributes)
            if not isinstance(event, VehiclePing):
                raise DecodeError(f"{event.event_type} is not a VehiclePing")
            return Position.of(event)
        version = attributes.get("schemaVersion")
        if version is not None and version != self._version:
            raise DecodeError(
                f"{EVENT_TYPE} schema version {version} is not the version this service reads "
                f"({self._version}); deploy the newer schema first"
            )
        record = self._body(data)
        # The model strips surrounding whitespace from strings (``str_strip_whitespace``).
        event_id = record["event_id"].strip()
        if not 0 < len(event_id) <= 128:
            raise DecodeError(f"body is not a valid {EVENT_TYPE}: event_id length {len(event_id)}")
        if "eventId" in attributes and attributes["eventId"] != event_id:
            raise DecodeError(
                f"eventId attribute {attributes['eventId']!r} differs from the body's {event_id!r}"
            )
        lat, lng = record["lat"], record["lng"]
        # NaN fails both comparisons, as it fails the model's ge/le constraints.
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
            raise DecodeError(f"body is not a valid {EVENT_TYPE}: position {lat}, {lng}")
        return Position(
            vehicle_id=record["vehicle_id"].strip(),
            lat=lat,
            lng=lng,
            recorded_at=record["recorded_at"],
            heading_deg=record["heading_deg"],
            speed_mps=record["speed_mps"],
            accuracy_m=record["accuracy_m"],
        )
