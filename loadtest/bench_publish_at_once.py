"""What the telemetry ingest's lock-free try costs on the event loop (issue #24 item 2).

The command service records and publishes a telemetry batch on its event loop only if the
Pub/Sub broker's write lock is free at once (``concurrency.offload.AtOnce``, through
``db.without_waiting``, which the broker honours), and otherwise hands it to its ingest thread.
This measures the CPU per batch of 100 pings, parsed from the request body, recorded and published
into an embedded broker with the catalog's subscriptions, through that path against the path it
replaced (``Inline``: on the loop, waiting for the lock if need be), uncontended, in one process:
interleaved rounds of each, each first in turn.

    .venv/bin/python -m loadtest.bench_publish_at_once [BATCHES_PER_ROUND] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import REGISTRY

from meridian.concurrency.offload import AtOnce, Inline, Offload
from meridian.config import Settings
from meridian.domain.actors import Actor
from services.command.bootstrap import bootstrap
from services.command.handlers import Deps
from services.command.handlers import telemetry as handlers
from services.command.routes.telemetry import telemetry_pings

PINGS = 100
GATEWAY = Actor(subject="gw-1", role="gateway")


def batch_body(now: datetime, batch: int) -> bytes:
    """100 pings of 100 vehicles, dated within the last minute (distinct per batch)."""
    pings = [
        {
            "vehicle_id": f"veh-{i}",
            "driver_id": f"drv-{i}",
            "position": {"lat": 12.9 + i / 1000, "lng": 77.6 - i / 1000},
            "heading_deg": 90.0,
            "speed_mps": 8.5,
            "accuracy_m": 4.0,
            "recorded_at": (
                now - timedelta(seconds=60) + timedelta(milliseconds=batch)
            ).isoformat(),
        }
        for i in range(PINGS)
    ]
    return json.dumps({"pings": pings}).encode()


async def cpu_per_batch(offload: Offload, deps: Deps, bodies: list[bytes]) -> float:
    assigned = handlers.AssignedVehicles(deps.store)

    def record(body: bytes) -> object:
        return handlers.record_pings(telemetry_pings(body), GATEWAY, deps, assigned)

    started = time.process_time()
    for body in bodies:
        await offload.run(record, body)
    return (time.process_time() - started) / len(bodies) * 1000


def main(batches: int = 500, rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(data_dir=Path(directory))
        deps, _, _, _, _, ingest, _ = bootstrap(settings)
        assert isinstance(ingest, AtOnce), "no lock-free try wired for the embedded runtime"
        broker = deps.publisher.broker  # type: ignore[attr-defined]
        from meridian.catalog import load_catalog

        broker.apply_catalog(load_catalog(), lambda s, p: f"http://127.0.0.1:9/{s}{p}")
        now = datetime.now(UTC)
        results: dict[str, list[float]] = {}

        async def run() -> None:
            both: list[tuple[str, Offload]] = [("inline", Inline()), ("at once", ingest)]
            for round_ in range(rounds):
                for name, offload in both if round_ % 2 else both[::-1]:
                    bodies = [batch_body(now, round_ * batches + i) for i in range(batches)]
                    results.setdefault(name, []).append(await cpu_per_batch(offload, deps, bodies))
            # Uncontended, every batch of the at-once path was published on the loop.
            assert ingest.waiting == 0
            on_thread = REGISTRY.get_sample_value(
                "meridian_publish_batches_total", {"where": "publisher_thread"}
            )
            assert not on_thread, f"{on_thread} batches went to the thread"

        asyncio.run(run())
        broker.close()
    print(f"CPU-ms per {PINGS}-ping batch, {rounds} interleaved rounds of {batches} (median; all)")
    for name, costs in sorted(results.items()):
        shown = ", ".join(f"{c:.3f}" for c in costs)
        print(f"  {name:8}: {statistics.median(costs):.3f}  ({shown})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
