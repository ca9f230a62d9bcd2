"""The local source over the embedded broker: pings published on vehicle.telemetry come out as
GeofenceCrossed events on logistics.events, and the geofence subscription is left fully acked."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import GeofenceCrossed, VehiclePing, derive_event_id
from meridian.embedded.pubsub import Broker, SubscriptionConfig
from pipelines.geofence import source as sources
from pipelines.geofence.fences import METRES_PER_DEGREE
from pipelines.geofence.pipeline import run

LAT0, LNG0 = 52.0, 13.0


def test_pings_on_the_broker_become_events_and_are_acked(tmp_path: Path) -> None:
    catalog = load_catalog()
    codec = EventCodec(catalog)
    broker = Broker(tmp_path)
    broker.apply_catalog(catalog, lambda service, path: f"http://127.0.0.1:9/{service}{path}")
    broker.create_subscription(
        SubscriptionConfig("watch-events", "logistics.events"), exist_ok=True
    )
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
    start = time.time() - 600
    pings = []
    for i in range(40):  # drives north through the circle at 5 m/s, a ping per 10 s
        recorded = datetime.fromtimestamp(start + 10 * i, UTC)
        lat = LAT0 + (-600 + 50 * i) / METRES_PER_DEGREE
        pings.append(
            VehiclePing(
                event_id=derive_event_id("ping", "v1", recorded.isoformat()),
                occurred_at=recorded,
                vehicle_id="v1",
                lat=lat,
                lng=LNG0,
                recorded_at=recorded,
            )
        )
    broker.publish("vehicle.telemetry", [codec.to_message(p) for p in pings])
    broker.publish("vehicle.telemetry", [codec.to_message(pings[5])])  # a redelivered duplicate

    run(
        [
            "--streaming",
            f"--data_dir={tmp_path}",
            f"--fences_file={fences}",
            "--fences_from_store=false",
            "--stop_when_idle_s=1.5",
            "--allowed_lateness_s=1",
            "--fence_refresh_s=60",
            "--max_batch=16",
        ]
    )

    events = [
        codec.from_message(m.message.data, m.message.attributes)
        for m in broker.pull("watch-events", 100)
    ]
    crossed = sorted(
        (e.direction.value, e.crossed_at) for e in events if isinstance(e, GeofenceCrossed)
    )
    assert [d for d, _ in sorted(crossed, key=lambda c: c[1])] == ["ENTER", "EXIT"]
    messages = broker.pull("watch-events", 100)
    assert messages == []
    metrics = broker.metrics("geofence")
    assert metrics.backlog == 0  # everything pulled was acknowledged
    state = next(iter(sources._STATES.values()))
    assert state.acked_batches >= 2  # several batches, each acked after the next pull
