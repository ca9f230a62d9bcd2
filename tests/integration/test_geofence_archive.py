"""Batch replay from the warehouse archive gives the same events as the streaming job.

The pings go through the platform's own path to the archive: published on vehicle.telemetry,
written to ``telemetry.raw_pings`` by the BigQuery subscription sink (telemetry-archive). The
streaming job drains the geofence subscription; the batch job reads the archive for the time
range. Both publish to logistics.events, and their events (deterministic ids) must be identical.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import GeofenceCrossed, VehicleIdle, VehiclePing, derive_event_id
from meridian.embedded.pubsub import Broker, SubscriptionConfig
from meridian.embedded.pubsub.bigquery import BigQuerySink
from meridian.embedded.warehouse import EmbeddedWarehouse
from pipelines.geofence.fences import METRES_PER_DEGREE
from pipelines.geofence.pipeline import run

LAT0, LNG0 = 52.0, 13.0
M = 1 / METRES_PER_DEGREE  # degrees of latitude per metre


def _ping(vehicle: str, ts: float, lat: float, lng: float = LNG0) -> VehiclePing:
    recorded = datetime.fromtimestamp(ts, UTC)
    return VehiclePing(
        event_id=derive_event_id("ping", vehicle, recorded.isoformat()),
        occurred_at=recorded,
        vehicle_id=vehicle,
        lat=lat,
        lng=lng,
        recorded_at=recorded,
    )


def _fleet(start: float) -> list[VehiclePing]:
    """Vehicles driving through the depot (one arriving slightly out of order), one standing
    still for ten minutes inside it, then one redelivered duplicate."""
    pings = []
    for n in range(4):
        path = [
            _ping(f"through-{n}", start + 10 * i + n, LAT0 + (-600 + 40 * i) * M, LNG0 + n * 50 * M)
            for i in range(35)
        ]
        if n == 3:  # neighbours swapped: the archive and the stream see them out of order
            for i in range(0, len(path) - 1, 2):
                path[i], path[i + 1] = path[i + 1], path[i]
        pings += path
    rng = random.Random(3)
    pings += [
        _ping(
            "parked", start + 15 * i, LAT0 + rng.uniform(-3, 3) * M, LNG0 + rng.uniform(-3, 3) * M
        )
        for i in range(40)
    ]
    pings.append(pings[7])
    return pings


def _events(broker: Broker, codec: EventCodec, subscription: str) -> list[Any]:
    out = []
    while batch := broker.pull(subscription, 1000):
        broker.acknowledge(subscription, [m.ack_id for m in batch])
        out += [codec.from_message(m.message.data, m.message.attributes) for m in batch]
    return out


def test_archive_replay_gives_the_same_events_as_streaming(tmp_path: Path) -> None:
    catalog = load_catalog()
    codec = EventCodec(catalog)
    broker = Broker(tmp_path)
    broker.apply_catalog(catalog, lambda service, path: f"http://127.0.0.1:9/{service}{path}")
    broker.create_subscription(SubscriptionConfig("watch-events", "logistics.events"))
    fences = tmp_path / "fences.geojson"
    fences.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "id": "depot",
                        "properties": {"radius_m": 200, "margin_m": 10},
                        "geometry": {"type": "Point", "coordinates": [LNG0, LAT0]},
                    },
                ],
            }
        )
    )
    start = time.time() - 1800
    pings = _fleet(start)
    messages = [codec.to_message(p) for p in pings]
    for i in range(0, len(messages), 50):
        broker.publish("vehicle.telemetry", messages[i : i + 50])
    sink = BigQuerySink(broker, EmbeddedWarehouse(tmp_path), batch=60)
    while sink.drain_once():
        pass
    common = [f"--data_dir={tmp_path}", f"--fences_file={fences}", "--fences_from_store=false"]

    run(
        [
            "--streaming",
            *common,
            "--stop_when_idle_s=1",
            "--allowed_lateness_s=30",
            "--max_batch=40",
        ]
    )
    streamed = _events(broker, codec, "watch-events")

    window = [
        f"--archive_start={datetime.fromtimestamp(start - 1, UTC).isoformat()}",
        f"--archive_end={datetime.fromtimestamp(time.time() + 1, UTC).isoformat()}",
    ]
    run([*common, *window])
    replayed = _events(broker, codec, "watch-events")

    crossed = [e for e in streamed if isinstance(e, GeofenceCrossed)]
    assert sorted((e.vehicle_id, e.direction.value) for e in crossed) == [
        ("parked", "ENTER"),
        *((f"through-{n}", d) for n in range(4) for d in ("ENTER", "EXIT")),
    ]
    idle = {e.vehicle_id: e for e in streamed if isinstance(e, VehicleIdle)}
    assert sorted(idle) == ["parked", "through-0", "through-1", "through-2", "through-3"]
    assert abs(idle["parked"].idle_since.timestamp() - start) < 0.001  # Avro keeps milliseconds
    assert sorted(e.model_dump_json() for e in replayed) == sorted(
        e.model_dump_json() for e in streamed
    )
