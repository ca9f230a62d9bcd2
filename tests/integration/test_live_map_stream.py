"""The customer tracking stream on the embedded document store: a position written by another
process reaches the stream through the store's listeners, and the stream ends with the final
status. Also: the position writer over the real embedded broker and store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from meridian.app.tracking import TrackingTokens
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import VehiclePing
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.pubsub.adapter import EmbeddedPubSub
from meridian.embedded.pubsub.broker import Broker
from services.live_map.pings import PingDecoder
from services.live_map.tracking import MapEvent, TrackingDeps, open_tracking, track_parcel
from services.live_map.writer import PositionWriter

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime.now(UTC)

WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from meridian.embedded.docstore import EmbeddedDocumentStore
from services.live_map.positions import Position
from services.live_map.writer import write_positions

store = EmbeddedDocumentStore(Path(sys.argv[1]))
step = sys.argv[2]
if step == "position":
    at = datetime.fromisoformat(sys.argv[3])
    write_positions(store, [Position("veh-1", 12.5, 77.5, at, heading_deg=45.0)], datetime.now(UTC))
else:
    store.update("parcels/p-1", {"status": "DELIVERED"})
"""


def in_other_process(data_dir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(data_dir), *args], cwd=ROOT, check=True)


def seed_parcel(store: EmbeddedDocumentStore) -> None:
    end = T0 + timedelta(hours=2)
    store.set(
        "parcels/p-1",
        {
            "parcel_id": "p-1",
            "status": "OUT_FOR_DELIVERY",
            "vehicle_id": "veh-1",
            "stop": {
                "location": {"lat": 12.97, "lng": 77.59},
                "address": "1 MG Road",
                "window": {"start": T0, "end": end},
            },
        },
    )


async def next_event(stream: object, kind: str) -> MapEvent:
    async def find() -> MapEvent:
        async for event in stream:  # type: ignore[attr-defined]
            if event.kind == kind:
                return event
        raise AssertionError(f"the stream ended before a {kind} event")

    return await asyncio.wait_for(find(), 30)


async def test_a_write_in_another_process_reaches_the_stream(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    seed_parcel(store)
    tokens = TrackingTokens(b"k" * 32)
    deps = TrackingDeps(store, tokens, time.time)
    grant = open_tracking("p-1", tokens.issue("p-1"), deps)
    stream = track_parcel("p-1", grant, deps)
    try:
        status = await next_event(stream, "status")
        assert status.data["status"] == "OUT_FOR_DELIVERY"
        await asyncio.to_thread(in_other_process, tmp_path, "position", T0.isoformat())
        vehicle = await next_event(stream, "vehicle")
        assert (vehicle.data["lat"], vehicle.data["heading_deg"]) == (12.5, 45.0)
        await asyncio.to_thread(in_other_process, tmp_path, "deliver")
        end = await next_event(stream, "end")
        assert end.data["status"] == "DELIVERED"
    finally:
        await stream.aclose()


async def test_the_writer_consumes_the_subscription_and_writes_positions(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.apply_catalog(
        load_catalog(), lambda service, path: f"http://127.0.0.1:9/{service}{path}"
    )
    pubsub = EmbeddedPubSub(broker)
    codec = EventCodec(load_catalog())
    store = EmbeddedDocumentStore(tmp_path)
    messages = []
    for n, lat in enumerate([12.1, 12.2, 12.3]):
        recorded = T0 + timedelta(seconds=5 * n)
        messages.append(
            codec.to_message(
                VehiclePing(
                    event_id=f"evt-{n}",
                    occurred_at=recorded,
                    vehicle_id="veh-1",
                    lat=lat,
                    lng=77.5,
                    recorded_at=recorded,
                )
            )
        )
    pubsub.publish("vehicle.telemetry", list(reversed(messages)))  # newest first
    writer = PositionWriter(
        store, pubsub, PingDecoder(load_catalog()), clock=lambda: datetime.now(UTC), interval_s=0.2
    )
    task = asyncio.create_task(writer.run())
    try:
        for _ in range(300):
            document = store.get("live_map/veh-1")
            if (
                document is not None
                and writer.stats.consumed == 3
                and not writer.debouncer.pending_count()
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    document = store.get("live_map/veh-1")
    assert document is not None
    assert document.data["lat"] == 12.3  # the newest by event time, though it came first
    assert writer.stats.dropped == 2
    assert broker.pull("live-map", 10) == []  # everything acknowledged
