"""Decoding and validation of pings: whatever cannot be used becomes a ``Rejected`` with its reason.

Decoding reads the Avro body with the compiled Avro reader (``meridian.codec.avro_reader``, the
one VehiclePing decoder the live map and the event codec use too) straight into a ``Ping``: no
pydantic model per ping, as this runs for every message of the firehose. Nothing here raises on
bad input; the pipeline must not crash on a poison ping.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meridian.catalog import Catalog
from meridian.codec.avro_reader import record_reader
from meridian.domain.errors import DecodeError
from pipelines.geofence.model import Ping, PingBatch, Rejected


@dataclass(frozen=True)
class Limits:
    max_speed_mps: float = 70.0  # 250 km/h: faster is a GPS or app fault for a delivery fleet
    max_future_s: float = 120.0  # clock skew tolerated on a driver's phone
    max_accuracy_m: float = 1_000.0


class PingDecoder:
    """Avro VehiclePing bodies → Pings (or Rejected, with why)."""

    def __init__(self, catalog: Catalog) -> None:
        # Timestamps read as the microseconds they are encoded as: a ping's time is wanted as a
        # number, and building a timezone-aware datetime per ping only to turn it back into one
        # was about a third of the decoding time.
        self._read = record_reader(catalog.schemas["VehiclePing"], logical_types=False)

    def decode(self, data: bytes, attributes: Mapping[str, str]) -> Ping | Rejected:
        event_type = attributes.get("eventType", "VehiclePing")
        if event_type != "VehiclePing":
            return _rejected(f"not a VehiclePing but {event_type}", data, attributes)
        try:
            record = self._read(data)
            return Ping(
                vehicle_id=record["vehicle_id"],
                event_id=record["event_id"],
                ts=record["recorded_at"] / 1e6,  # timestamp-micros
                lat=record["lat"],
                lng=record["lng"],
                speed_mps=record.get("speed_mps"),
                accuracy_m=record.get("accuracy_m"),
            )
        except DecodeError as e:
            return _rejected(f"undecodable VehiclePing: {e}", data, attributes)
        except Exception as e:  # a field of the wrong type from a foreign schema
            return _rejected(f"undecodable VehiclePing: {type(e).__name__}: {e}", data, attributes)

    def decode_batch(self, messages: Iterable[tuple[bytes, Mapping[str, str]]]) -> PingBatch:
        pings: list[Ping] = []
        rejected: list[Rejected] = []
        for data, attributes in messages:
            result = self.decode(data, attributes)
            if isinstance(result, Ping):
                pings.append(result)
            else:
                rejected.append(result)
        return PingBatch(tuple(pings), tuple(rejected))


def validate(
    batch: PingBatch, limits: Limits, now: float | None = None
) -> tuple[list[Ping], list[Rejected]]:
    """Split a batch into usable pings and rejects (plus the batch's decode rejects)."""
    now = time.time() if now is None else now
    good: list[Ping] = []
    bad: list[Rejected] = list(batch.rejected)
    for ping in batch.pings:
        reason = problem(ping, limits, now)
        if reason is None:
            good.append(ping)
        else:
            bad.append(rejected_ping(ping, reason))
    return good, bad


def problem(ping: Ping, limits: Limits, now: float) -> str | None:
    lat, lng = ping.lat, ping.lng
    if not (math.isfinite(lat) and math.isfinite(lng)) or abs(lat) > 90 or abs(lng) > 180:
        return f"coordinates out of range: ({lat}, {lng})"
    if lat == 0.0 and lng == 0.0:
        return "null-island coordinates (0, 0): the device had no fix"
    if not ping.vehicle_id:
        return "no vehicle id"
    if ping.speed_mps is not None and (
        not math.isfinite(ping.speed_mps) or not 0 <= ping.speed_mps <= limits.max_speed_mps
    ):
        return f"reported speed {ping.speed_mps} m/s is beyond physical limits ({limits.max_speed_mps})"
    if ping.accuracy_m is not None and ping.accuracy_m > limits.max_accuracy_m:
        return f"accuracy {ping.accuracy_m} m is too coarse to place the vehicle"
    if ping.ts > now + limits.max_future_s:
        return f"recorded {ping.ts - now:.0f} s in the future"
    return None


def rejected_ping(ping: Ping, reason: str) -> Rejected:
    body = json.dumps(ping._asdict(), separators=(",", ":"), default=str).encode()
    return Rejected(reason, body, (("vehicleId", ping.vehicle_id), ("eventId", ping.event_id)))


def _rejected(reason: str, data: bytes, attributes: Mapping[str, str]) -> Rejected:
    return Rejected(
        reason, bytes(data), tuple(sorted((str(k), str(v)) for k, v in attributes.items()))
    )


def decode_archive_rows(decoder: PingDecoder, rows: Sequence[Mapping[str, Any]]) -> PingBatch:
    """Warehouse rows of the telemetry-archive table (``data`` + JSON ``attributes``) → a batch."""
    messages = []
    for row in rows:
        try:
            attributes = json.loads(row.get("attributes") or "{}")
        except json.JSONDecodeError:
            attributes = {}
        messages.append((bytes(row["data"]), attributes))
    return decoder.decode_batch(messages)
