"""The fleet simulator drives a fixed wall-clock window: a simulator slowed down by a busy
machine stops on time instead of running on to catch up (which made the live-map benchmark's
publisher outlive its measurement), and says how far behind it fell."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from meridian.sim import Fleet, SimOptions, Sink, run_fleet


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
