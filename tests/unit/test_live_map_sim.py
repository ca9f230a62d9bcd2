"""The fleet simulator drives a fixed wall-clock window: a simulator slowed down by a busy
machine stops on time instead of running on to catch up (which made the live-map benchmark's
publisher outlive its measurement), and says how far behind it fell. Vehicles ping on their own
cadence and move between pings at realistic speeds."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from meridian.runtime.sim import NOISE_M, Fleet, SimOptions, Sink, distance_m, run_fleet


class SlowSink(Sink):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.pings = 0

    async def send(self, pings: Sequence[dict[str, Any]]) -> int:
        await asyncio.sleep(self.delay_s)
        self.pings += len(pings)
        return len(pings)


def test_a_slow_simulator_stops_on_time_and_reports_how_far_behind_it_was() -> None:
    fleet = Fleet(SimOptions(vehicles=20, ping_interval_s=0.1, seed=3))
    sink = SlowSink(delay_s=0.3)  # every tick takes three ticks' time
    started = time.monotonic()
    report = asyncio.run(run_fleet(fleet, sink, duration_s=0.6, tick_s=0.1))
    elapsed = time.monotonic() - started
    assert elapsed < 1.2  # six ticks of 0.3 s would take 1.8 s
    assert report.ticks < 6
    assert report.behind_s > 0.1
    assert sink.pings == report.sent > 0


def test_vehicles_ping_once_per_interval_and_drive_between_pings_at_their_speed() -> None:
    # Moved only when they ping (so a tick costs what its pings cost), yet every ping is where
    # the vehicle has got to by then.
    options = SimOptions(vehicles=40, ping_interval_s=2.0, late_rate=0, duplicate_rate=0, seed=5)
    fleet = Fleet(options)
    now = datetime(2026, 11, 21, 9, tzinfo=UTC)
    seen: dict[str, list[tuple[float, tuple[float, float]]]] = {}
    for tick in range(1, 201):  # 20 s in 0.1 s ticks
        for ping in fleet.advance(tick * 0.1, now):
            position = (ping["position"]["lat"], ping["position"]["lng"])
            seen.setdefault(ping["vehicle_id"], []).append((tick * 0.1, position))
    assert len(seen) == 40
    assert all(len(pings) == 10 for pings in seen.values())
    moved = []
    for pings in seen.values():
        for (t0, a), (t1, b) in itertools.pairwise(pings):
            assert 1.9 < t1 - t0 < 2.2
            # At most 13 m/s (+15%) for the time between pings, plus the GPS noise of both.
            assert distance_m(a, b) < 13 * 1.15 * (t1 - t0) + 8 * NOISE_M
            moved.append(distance_m(a, b))
    assert statistics.mean(moved) > 8  # most of them are driving, not dwelling
