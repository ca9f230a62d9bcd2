"""Codec and fan-out routing cost per message, beside JSON encoding of the same event.

Every message on the event plane is Avro-encoded once and matched against each subscription
filter of its topic, so these two costs bound how fast one process can publish and fan out.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import ParcelDelivered, VehiclePing


def _rate(fn: Callable[[], object], seconds: float = 1.0, rounds: int = 5) -> float:
    """Median calls per second over ``rounds`` timed rounds."""
    rates = []
    for _ in range(rounds):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / rounds:
            for _ in range(200):
                fn()
            count += 200
        rates.append(count / elapsed)
    return statistics.median(rates)


def run() -> str:
    catalog = load_catalog()
    codec = EventCodec(catalog)
    now = datetime.now(UTC)
    delivered = ParcelDelivered(
        event_id="evt-1",
        occurred_at=now,
        parcel_id="p-1",
        shipment_id="s-1",
        client_id="c-1",
        route_id="r-1",
        driver_id="drv-7",
        vehicle_id="veh-7",
        delivered_at=now,
        lat=12.97,
        lng=77.59,
        window_end=now + timedelta(hours=1),
        recipient_phone="+919812345678",
        pod_signature_ref="sig/1",
    )
    ping = VehiclePing(
        event_id="evt-2",
        occurred_at=now,
        vehicle_id="veh-7",
        lat=12.97,
        lng=77.59,
        speed_mps=8.0,
        heading_deg=90.0,
        recorded_at=now,
    )
    message = codec.to_message(delivered)
    as_dict = delivered.model_dump(mode="json")
    rows = [
        (
            "JSON `json.dumps` of the same ParcelDelivered (baseline)",
            _rate(lambda: json.dumps(as_dict).encode()),
        ),
        (
            "Avro encode ParcelDelivered (validated) + attributes",
            _rate(lambda: codec.to_message(delivered)),
        ),
        (
            "Avro decode ParcelDelivered (to typed event)",
            _rate(lambda: codec.from_message(message.data, message.attributes)),
        ),
        ("Avro encode VehiclePing (validated) + attributes", _rate(lambda: codec.to_message(ping))),
        (
            "Fan-out routing: match 9 filters of logistics.events",
            _rate(lambda: catalog.matching_subscriptions("logistics.events", message.attributes)),
        ),
    ]
    baseline = rows[0][1]
    lines = [
        "## Codec and filter routing (one core)",
        "",
        "| operation | per second | µs each | vs JSON baseline |",
        "|---|---:|---:|---:|",
    ]
    for label, rate in rows:
        lines.append(f"| {label} | {rate:,.0f} | {1e6 / rate:.1f} | {rate / baseline:.2f}× |")
    lines += [
        "",
        f"ParcelDelivered is {len(message.data)} bytes in Avro and "
        f"{len(json.dumps(as_dict))} bytes in JSON.",
    ]
    return "\n".join(lines)
