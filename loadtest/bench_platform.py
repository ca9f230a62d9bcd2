"""The whole platform under load: what a user of the embedded runtime sees of "mark delivered".

Every process of ``meridian up`` runs (started by the supervisor ``meridian up`` uses, on
loopback ports), with the fleet simulator (``meridian sim``, its own process) pinging through the
command service's telemetry endpoint and a client's webhook endpoint receiving ParcelDelivered.
Parcels are put out for delivery through the command service's API beforehand; then ``:deliver``
is called open loop at each rate of ``--steps`` for ``--step-seconds`` (a request at its planned
time whatever the earlier ones do, timed from then; a ``503`` sent again after its Retry-After,
as a driver's app would: ``tests/e2e/whole_platform.py``). Per step it reports:

- ``:deliver`` p50 / p99 with the whole platform running, and the same for the command service
  alone (its one process on a data directory of its own, nothing else running) at the same rate,
  measured first in the same run: the baseline;
- the effects' end-to-end lag: the oldest unacknowledged message's age on each reactor's push
  subscription, at its worst over the step and its drain, and how long the backlogs took to drain
  once the last delivery was accepted;
- whether each of the six reactors kept up: its backlog and Eventarc's lag behind the change
  log flat over the step (grown by at most a tenth of the step's deliveries, or a second's if
  that is more: ``in_flight``); and the highest rate at which all of them did.

Then the simulator alone drives the reference peak (8,200 vehicles, a ping each per 1.6 s: 5,125
pings/s) or as much of it as this machine produces (reported as a share of it), and the run
reports the live map's freshness as customers see it (tracking streams held open: an SSE
vehicle event's arrival minus the ping's ``recorded_at``) and whether the live map's writer, the
geofence job and the telemetry archive keep up (backlog flat).

Backlogs and lags are read as ``meridian status`` reads them. CPU steal (the hypervisor's share,
from ``/proc/stat``) is recorded per phase.

``python -m loadtest.bench platform`` (part of ``make bench``: the default steps of 10 s, a few
minutes in all) writes the section of BENCHMARKS.md; ``python -m loadtest.bench_platform --steps
25,50,100,200 --step-seconds 60`` prints it (each option also reads ``PLATFORM_BENCH_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.bench_command import _cpu_times, _process_cpu_s
from loadtest.bench_live_map import Freshness, _percentile
from meridian.app.tracking import TrackingTokens
from meridian.runtime.sim import vehicle_id
from tests.e2e.test_reactors import REACTORS
from tests.e2e.whole_platform import (
    Backlogs,
    Delivered,
    WholePlatform,
    backlogs,
    deliver_open_loop,
    send_out,
    serve_webhooks,
    wait_drained,
    whole_platform,
)

ROOT = Path(__file__).resolve().parent.parent
STEPS = os.environ.get("PLATFORM_BENCH_STEPS", "25,50,100,200")
STEP_S = float(os.environ.get("PLATFORM_BENCH_STEP_SECONDS", "10"))
PEAK_S = float(os.environ.get("PLATFORM_BENCH_PEAK_SECONDS", "20"))
DRAIN_S = 90.0  # after a step: how long the backlogs are given to drain before the next one
# The reference peak: 8,200 vehicles, each pinging every 1.6 s (5,125 pings/s).
PEAK_VEHICLES, PEAK_INTERVAL_S = 8_200, 1.6
# While the deliveries are measured: `meridian sim`'s default fleet (300 vehicles every 5 s).
BACKGROUND_VEHICLES, BACKGROUND_INTERVAL_S = 300, 5.0
WARMUP_S = 10.0  # the peak's first pings all pass the live map's debounce at once
TRACKED = 40  # customer tracking streams held open (as in the live-map bench)
TELEMETRY = ("live-map", "geofence", "telemetry-archive")


def in_flight(per_s: float, seconds: float) -> float:
    """How far a backlog may grow over a window of ``seconds`` at ``per_s`` arrivals and still
    count as flat: a tenth of what arrived (the consumer took nine in ten), or a second's worth
    in flight if that is more (short windows)."""
    return per_s * max(1.0, 0.1 * seconds)


@dataclass
class Step:
    rate: int
    seconds: float
    alone: Delivered | None = None
    alone_steal: float = 0.0
    whole: Delivered | None = None
    whole_steal: float = 0.0
    cores: float = 0.0  # CPU the platform's processes used over the step and its drain
    start: Backlogs | None = None
    end: Backlogs | None = None
    worst_age_s: dict[str, float] = field(default_factory=dict)  # per reactor subscription
    drained_s: float | None = None

    def growth(self, subscription: str) -> int:
        assert self.start is not None and self.end is not None
        return self.end.backlog[subscription] - self.start.backlog[subscription]

    def eventarc_growth(self) -> int:
        assert self.start is not None and self.end is not None
        return sum(self.end.eventarc_lag.values()) - sum(self.start.eventarc_lag.values())

    def kept_up(self, subscription: str) -> bool:
        return self.growth(subscription) <= in_flight(self.rate, self.seconds)

    def eventarc_kept_up(self) -> bool:
        return self.eventarc_growth() <= in_flight(self.rate, self.seconds)

    def all_kept_up(self) -> bool:
        return self.eventarc_kept_up() and all(self.kept_up(r) for r in REACTORS)


@dataclass
class Peak:
    seconds: float
    offered: float = 0.0  # pings/s the simulator sent
    accepted: float = 0.0
    freshness: list[float] = field(default_factory=list)
    start: Backlogs | None = None
    end: Backlogs | None = None
    steal: float = 0.0

    def kept_up(self, subscription: str) -> bool:
        assert self.start is not None and self.end is not None
        growth = self.end.backlog[subscription] - self.start.backlog[subscription]
        return growth <= in_flight(self.offered, self.seconds)


class Steal:
    """The share of the machine's CPU time the hypervisor gave to other tenants since made."""

    def __init__(self) -> None:
        self.before = _cpu_times()

    def share(self) -> float:
        deltas = [b - a for a, b in zip(self.before, _cpu_times(), strict=True)]
        return deltas[7] / max(sum(deltas), 1)


def _cpu_s(pids: dict[str, int]) -> float:
    total = 0.0
    for pid in pids.values():
        with contextlib.suppress(OSError, IndexError, ValueError):  # gone: used nothing more
            total += _process_cpu_s(pid)
    return total


def _log(message: str) -> None:
    print(f"   {message}", flush=True)


@contextmanager
def simulator(
    platform: WholePlatform, vehicles: int, interval_s: float, duration_s: float = 0
) -> Iterator[subprocess.Popen[str]]:
    """``meridian sim`` against the platform's command service (until stopped when
    ``duration_s`` is 0)."""
    argv = [sys.executable, "-m", "meridian.runtime.cli", "sim", "--vehicles", str(vehicles)]
    argv += ["--ping-interval", str(interval_s), "--duration", str(duration_s), "--quiet"]
    argv += ["--data-dir", str(platform.data_dir), "--command-url", platform.url("command")]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def measure_alone(data_dir: Path, steps: list[Step], step_s: float) -> None:
    """The baseline: the command service's one process, nothing else, at each step's rate."""
    with whole_platform(data_dir, only={"command"}) as alone:
        client = alone.client()
        driver = "drv-bench"
        parcels = send_out(alone, client, sum(int(s.rate * step_s) for s in steps), driver)
        headers = alone.driver_headers(driver)
        for step in steps:
            mine, parcels = parcels[: int(step.rate * step_s)], parcels[int(step.rate * step_s) :]
            steal = Steal()
            step.alone = asyncio.run(
                deliver_open_loop(alone.url("command"), mine, headers, step.rate)
            )
            step.alone_steal = steal.share()
            _log(
                f"command alone at {step.rate}/s: p50 {step.alone.quantile_ms(0.5):.0f} ms, "
                f"p99 {step.alone.quantile_ms(0.99):.0f} ms"
            )


def measure_whole(data_dir: Path, steps: list[Step], step_s: float, peak_s: float) -> Peak:
    env = {"MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"}
    with whole_platform(data_dir, env=env) as platform:
        client = platform.client()
        driver = "drv-bench"
        tokens = TrackingTokens.for_data_dir(platform.data_dir)
        with serve_webhooks(platform, client):
            tracked_vehicles = [vehicle_id(i * (PEAK_VEHICLES // TRACKED)) for i in range(TRACKED)]
            tracked = send_out(platform, client, TRACKED, "drv-tracked", tracked_vehicles)
            total = sum(int(s.rate * step_s) for s in steps)
            _log(f"sending {total} parcels out for delivery")
            parcels = send_out(platform, client, total, driver)
            settings, headers = platform.settings, platform.driver_headers(driver)
            with simulator(platform, BACKGROUND_VEHICLES, BACKGROUND_INTERVAL_S):
                if not wait_drained(settings, REACTORS, 240)[0]:
                    _log("the out-for-delivery wave had not drained after 240 s")
                for step in steps:
                    count = int(step.rate * step_s)
                    mine, parcels = parcels[:count], parcels[count:]
                    _deliver_step(platform, step, mine, headers)
            peak = _peak(platform, [(p, tokens.issue(p)) for p in tracked], peak_s)
    return peak


def _deliver_step(
    platform: WholePlatform, step: Step, parcels: list[str], headers: dict[str, str]
) -> None:
    settings = platform.settings
    readings: list[Backlogs] = []
    sending = threading.Event()
    sending.set()

    def watch() -> None:
        while sending.is_set():
            readings.append(backlogs(settings))
            time.sleep(1)

    steal, cpu = Steal(), _cpu_s(platform.pids())
    started = time.monotonic()
    step.start = backlogs(settings)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        step.whole = asyncio.run(
            deliver_open_loop(platform.url("command"), parcels, headers, step.rate)
        )
        step.end = backlogs(settings)
        accepted = time.monotonic()
        drained, after = wait_drained(settings, REACTORS, DRAIN_S)
    finally:
        sending.clear()
        watcher.join()
    if drained:
        step.drained_s = time.monotonic() - accepted
    step.cores = (_cpu_s(platform.pids()) - cpu) / (time.monotonic() - started)
    step.whole_steal = steal.share()
    for reactor in REACTORS:
        step.worst_age_s[reactor] = max(
            r.oldest_unacked_s[reactor] for r in [step.start, *readings, step.end, *after]
        )
    _log(
        f"whole platform at {step.rate}/s: p50 {step.whole.quantile_ms(0.5):.0f} ms, "
        f"p99 {step.whole.quantile_ms(0.99):.0f} ms; reactors "
        + ("kept up" if step.all_kept_up() else "fell behind")
        + (f", drained {step.drained_s:.0f} s after" if step.drained_s is not None else "")
    )


def _peak(platform: WholePlatform, tracked: list[tuple[str, str]], peak_s: float) -> Peak:
    """The simulator at the reference peak, nothing else sent; the live map's freshness and the
    telemetry consumers' backlogs."""
    peak = Peak(peak_s)
    freshness = Freshness(platform.url("live-map"), tracked)
    duration = WARMUP_S + peak_s
    try:
        with simulator(platform, PEAK_VEHICLES, PEAK_INTERVAL_S, duration) as sim:
            time.sleep(WARMUP_S)
            steal = Steal()
            peak.start = backlogs(platform.settings)
            freshness.recording = True
            time.sleep(peak_s)
            freshness.recording = False
            peak.end = backlogs(platform.settings)
            peak.steal = steal.share()
            output, _ = sim.communicate(timeout=duration + 60)
    finally:
        freshness.stop.set()
    # "sent N pings, M accepted, F failed" over the whole run, warm-up included
    words = output.strip().splitlines()[-1].split()
    peak.offered, peak.accepted = int(words[1]) / duration, int(words[3]) / duration
    peak.freshness = [age for age, _ in freshness.samples]
    _log(f"peak: {peak.offered:,.0f} pings/s offered, freshness samples {len(peak.freshness)}")
    return peak


def run(steps: str = STEPS, step_s: float = STEP_S, peak_s: float = PEAK_S) -> str:
    measured = [Step(int(rate), step_s) for rate in steps.split(",")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        _log("the command service alone (baseline)")
        measure_alone(Path(tmp) / "alone", measured, step_s)
        _log("the whole platform")
        peak = measure_whole(Path(tmp) / "platform", measured, step_s, peak_s)
    return report(measured, peak, step_s, peak_s, (load_before, os.getloadavg()[0]))


def _ms(delivered: Delivered | None) -> str:
    if delivered is None:
        return "–"
    return f"{delivered.quantile_ms(0.5):,.0f} / {delivered.quantile_ms(0.99):,.0f}"


def _ratio(step: Step) -> float:
    assert step.whole is not None and step.alone is not None
    return step.whole.quantile_ms(0.99) / max(step.alone.quantile_ms(0.99), 1e-9)


def report(
    steps: list[Step], peak: Peak, step_s: float, peak_s: float, load: tuple[float, float]
) -> str:
    kept = [s.rate for s in steps if s.all_kept_up()]
    sustainable = max(kept, default=None)
    lines = [
        "## Whole platform: `:deliver` with every service of `meridian up` running",
        "",
        "Every process of `meridian up` on the 2 cores (the load generator, the fleet simulator "
        f"at {BACKGROUND_VEHICLES} vehicles every {BACKGROUND_INTERVAL_S:g} s and a client's "
        "webhook endpoint beside them); `:deliver` open loop at each rate for "
        f"{step_s:g} s, a `503` sent again after its Retry-After as a driver's app would "
        "(`loadtest/bench_platform.py`). The baseline is the command service alone, its one "
        "process and nothing else, at the same rates earlier in the same run. Latency is from "
        "each request's planned time to its `202`, retries included. The machine's load average "
        f"(1 min) was {load[0]:.1f} before the run and {load[1]:.1f} after it: what is above "
        "the benchmark's own processes (about 2 while it runs) competed with it for the cores.",
        "",
        *(
            [
                f"_A trial at a small scale (steps of {step_s:g} s, the peak for {peak_s:g} s): "
                "it shows the harness works, not the figures to quote, which come from steps of a "
                "minute or more on a quiet machine._",
                "",
            ]
            if step_s < 30
            else []
        ),
        "| rate | `:deliver` p50 / p99 ms, whole platform | command alone p50 / p99 ms "
        "| p99 whole / alone | 503s (retried) | Eventarc lag start → end "
        "| reactors' backlog start → end | worst oldest-unacked age | drained after "
        "| all six keep up | platform CPU (cores) | steal whole / alone |",
        "|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|---:|",
    ]
    for s in steps:
        assert s.start is not None and s.end is not None and s.whole is not None
        worst = max(s.worst_age_s.items(), key=lambda kv: kv[1])
        lines.append(
            f"| {s.rate}/s | {_ms(s.whole)} | {_ms(s.alone)} | {_ratio(s):.2f}× "
            f"| {s.whole.shed} | {sum(s.start.eventarc_lag.values())} → "
            f"{sum(s.end.eventarc_lag.values())} "
            f"| {sum(s.start.backlog[r] for r in REACTORS)} → "
            f"{sum(s.end.backlog[r] for r in REACTORS)} "
            f"| {worst[1]:.1f} s ({worst[0]}) "
            f"| {f'{s.drained_s:.0f} s' if s.drained_s is not None else f'not in {DRAIN_S:.0f} s'} "
            f"| {_kept_up(s)} "
            f"| {s.cores:.2f} | {s.whole_steal:.1%} / {s.alone_steal:.1%} |"
        )
    lines += [
        "",
        "Per reactor, backlog at the step's start → its end (the oldest unacknowledged "
        "message's age at worst, over the step and its drain):",
        "",
        "| rate | " + " | ".join(REACTORS) + " |",
        "|---:|" + "---|" * len(REACTORS),
    ]
    for s in steps:
        assert s.start is not None and s.end is not None
        cells = [
            f"{s.start.backlog[r]} → {s.end.backlog[r]} ({s.worst_age_s[r]:.1f} s)"
            for r in REACTORS
        ]
        lines.append(f"| {s.rate}/s | " + " | ".join(cells) + " |")
    lines += ["", *_verdicts(steps, sustainable), "", *_peak_report(peak, peak_s)]
    return "\n".join(lines)


def _kept_up(step: Step) -> str:
    if step.all_kept_up():
        return "yes"
    behind = [r for r in REACTORS if not step.kept_up(r)]
    if not step.eventarc_kept_up():
        behind.insert(0, "Eventarc")
    return "no: " + ", ".join(behind)


def _verdicts(steps: list[Step], sustainable: int | None) -> list[str]:
    if sustainable is None:
        return ["- **The reactors kept up at none of the rates.**"]
    ceiling = (
        " (the highest step: the ceiling is above it)" if sustainable == steps[-1].rate else ""
    )
    lines = [f"- Highest rate at which all six reactors keep up: **{sustainable}/s**{ceiling}."]
    by_rate = {s.rate: s for s in steps}
    for rate in (sustainable, 2 * sustainable):
        if rate in by_rate:
            lines.append(
                f"- At {rate}/s, `:deliver` p99 with the whole platform is "
                f"**{_ratio(by_rate[rate]):.2f}×** the command service's alone (aim ≤ 2×)."
            )
        else:
            lines.append(f"- {rate}/s was not among the steps: add it to `--steps`.")
    return lines


def _peak_report(peak: Peak, peak_s: float) -> list[str]:
    assert peak.start is not None and peak.end is not None
    reference = PEAK_VEHICLES / PEAK_INTERVAL_S
    rows = [
        f"| {name} | {peak.start.backlog[name]:,} → {peak.end.backlog[name]:,} "
        f"| {'yes' if peak.kept_up(name) else 'no'} |"
        for name in TELEMETRY
    ]
    return [
        f"### The fleet at the reference peak ({PEAK_VEHICLES:,} vehicles, a ping each per "
        f"{PEAK_INTERVAL_S:g} s: {reference:,.0f} pings/s)",
        "",
        f"`meridian sim` posting to `/v1/telemetry` for {peak_s:g} s after a {WARMUP_S:g} s "
        f"warm-up, nothing else sent: **{peak.offered:,.0f} pings/s offered "
        f"({peak.offered / reference:.0%} of the peak)**, {peak.accepted:,.0f}/s accepted; "
        f"CPU steal {peak.steal:.1%}. Live map freshness ({TRACKED} customer tracking streams, "
        "an SSE vehicle event's arrival minus the ping's `recorded_at`): "
        f"**p50 {_percentile(peak.freshness, 50):.2f} s, p95 {_percentile(peak.freshness, 95):.2f} s** "
        f"({len(peak.freshness)} samples).",
        "",
        "| consumer of `vehicle.telemetry` | backlog start → end | keeps up |",
        "|---|---|---|",
        *rows,
        "",
        "A backlog is flat (its consumer keeps up) when it grew over the window by no more than "
        "a tenth of what arrived in it, or a second's arrivals if that is more (in flight); a "
        "reactor keeps up when its backlog and Eventarc's lag behind the command service's "
        "change log are both flat over the step.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", default=STEPS, help="rates, comma-separated (PLATFORM_BENCH_STEPS)"
    )
    parser.add_argument(
        "--step-seconds", type=float, default=STEP_S, help="each step (PLATFORM_BENCH_STEP_SECONDS)"
    )
    parser.add_argument(
        "--peak-seconds",
        type=float,
        default=PEAK_S,
        help="the simulator at the peak (PLATFORM_BENCH_PEAK_SECONDS)",
    )
    args = parser.parse_args(argv)
    print(run(args.steps, args.step_seconds, args.peak_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
