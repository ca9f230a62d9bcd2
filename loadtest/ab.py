"""A/B of two revisions on the three figures a refactoring must not slow: ``:deliver`` server
CPU per request, telemetry pings per second (and server CPU per batch), and the reactors' CPU per
delivery. Runs interleaved (A B, B A, A B, ...) in one session, so the machine's drift and its
neighbours' CPU steal fall on both sides alike.

``python -m loadtest.ab --base REV [--head REV] [--rounds 3]`` checks ``REV`` out into a
temporary git worktree and compares it with this checkout (or with ``--head``, checked out the
same way, so a revision can be measured while the checkout moves on). The load generators, the seeding and the
measurements are this checkout's code; only the services under test run from each tree (their
processes start with that tree as working directory and first on ``PYTHONPATH``). So the two
revisions must share the embedded runtime's data formats, which a refactoring keeps.

Figures per round, then the median per side and the ratio B/A (this checkout over the base).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

import loadtest.bench_command as bench_command
import tests.e2e.test_reactors as e2e_reactors
from loadtest import bench_reactors
from meridian.catalog import load_catalog
from meridian.config import Settings
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.runtime.platform import prepare_data_dir
from tests.e2e.conftest import free_port_block

ROOT = Path(__file__).resolve().parent.parent
DELIVER_RATE, DELIVER_S, TELEMETRY_S = 600, 20, 15
REACTOR_RATE, REACTOR_S = 50, 10


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="meridian-ab-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), revision],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False
            )


@contextmanager
def services_from(tree: Path) -> Iterator[dict[str, str]]:
    """Environment and working directory under which the services start from ``tree``."""
    saved = bench_command.ROOT, e2e_reactors.ROOT
    bench_command.ROOT = e2e_reactors.ROOT = tree
    try:
        yield {**os.environ, "PYTHONPATH": str(tree)}
    finally:
        bench_command.ROOT, e2e_reactors.ROOT = saved


def command_round(tree: Path) -> dict[str, float]:
    """One command process from ``tree``: ``:deliver`` open loop at DELIVER_RATE, then telemetry
    in 100-ping batches from 8 Locust users."""
    with tempfile.TemporaryDirectory() as tmp, services_from(tree) as env:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        base = free_port_block()
        prepare_data_dir(load_catalog(), Settings(data_dir=data_dir, base_port=base))
        parcels = bench_command._seed(data_dir, DELIVER_RATE * DELIVER_S + 2000)
        issuer = LocalIdentityIssuer(data_dir)
        drivers = bench_command.DRIVERS
        tokens = {f"drv-{i}": issuer.token(f"drv-{i}", "driver") for i in range(drivers)}
        env = {**env, "MERIDIAN_DATA_DIR": str(data_dir), "MERIDIAN_LOG_LEVEL": "WARNING"}
        command = bench_command._serve("services.command.app", base + 1, env)
        url = f"http://127.0.0.1:{base + 1}"
        try:
            plan: dict[str, object] = {"scenario": "deliver", "tokens": tokens, "parcels": parcels}
            deliver = bench_command._measured(
                command.pid,
                lambda: bench_command._open_loop(url, plan, DELIVER_RATE, DELIVER_S, workdir),
            )
            telemetry = bench_command._measured(
                command.pid,
                lambda: bench_command._locust(
                    url, {"scenario": "telemetry", "tokens": tokens}, 8, TELEMETRY_S, 0, workdir
                ),
            )
        finally:
            command.terminate()
            command.wait(timeout=10)
    return {
        "deliver CPU-ms/req": deliver["cpu_ms"],
        "deliver p50 ms": deliver["p50"],
        "deliver errors": deliver["failures"],
        "telemetry pings/s": telemetry["rps"] * 100,
        "telemetry CPU-ms/batch": telemetry["cpu_ms"],
        "telemetry failures": telemetry["failures"],
        "steal": (deliver["steal"] + telemetry["steal"]) / 2,
    }


def reactors_round(tree: Path) -> dict[str, float]:
    """The platform, the command path and the six reactors from ``tree``; routes of 25 stops
    sent out, then delivered as drivers would at REACTOR_RATE for REACTOR_S, drained."""
    with tempfile.TemporaryDirectory() as tmp, services_from(tree) as env:
        data_dir = Path(tmp) / "data"
        env = {
            **env,
            "MERIDIAN_DATA_DIR": str(data_dir),
            "MERIDIAN_BASE_PORT": str(free_port_block(24)),
            "MERIDIAN_LOG_LEVEL": "WARNING",
            "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        }
        receiver = ThreadingHTTPServer(("127.0.0.1", 0), bench_reactors._Ok)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        runtime, processes = e2e_reactors.start_services(env, data_dir)
        try:
            client = e2e_reactors._client(runtime)
            httpx.post(
                f"{runtime.url('command')}/v1/clients/{client.client_id}/webhooks",
                json={
                    "url": f"http://127.0.0.1:{receiver.server_port}/hooks",
                    "event_types": ["ParcelDelivered"],
                },
                headers={"X-API-Key": client.api_key},
                timeout=10,
            ).raise_for_status()
            store, broker = all_stores(data_dir), Broker(data_dir)
            end = datetime.now(UTC) + timedelta(hours=12)
            routes = [
                e2e_reactors._send_out(runtime, client, 25, f"r-{os.urandom(3).hex()}", end)
                for _ in range(REACTOR_RATE * REACTOR_S // 25)
            ]
            bench_reactors._drain(store, broker, bench_reactors.SETTLE_S)
            pids = dict(zip(e2e_reactors.MODULES, (p.pid for p in processes), strict=True))
            phase = bench_reactors.Phase(REACTOR_RATE)
            before = bench_reactors._cpu(pids)
            rng = random.Random(7)
            start = datetime.now(UTC)
            drops = bench_reactors._side_by_side(
                [bench_reactors._drive(route, start, rng) for route in routes]
            )
            bench_reactors._deliver_at(phase, drops, runtime.url("command"), client)
            drained = bench_reactors._drain(store, broker, bench_reactors.DRAIN_S)
            used = {k: v - before[k] for k, v in bench_reactors._cpu(pids).items()}
        finally:
            e2e_reactors.stop_services(processes)
            receiver.shutdown()
    delivered = max(len(phase.accepted), 1)
    reactors = sum(used[name] for name in e2e_reactors.REACTORS)
    return {
        "reactors CPU-ms/delivery": reactors * 1000 / delivered,
        "all processes CPU-ms/delivery": sum(used.values()) * 1000 / delivered,
        **{f"{name} CPU-ms/delivery": used[name] * 1000 / delivered for name in sorted(used)},
        "deliveries": float(len(phase.accepted)),
        "drained": float(drained),
    }


def interleave(
    rounds: int, trees: dict[str, Path], measure: Callable[[Path], dict[str, float]]
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    names = list(trees)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            figures = measure(trees[name])
            results[name].append(figures)
            print(f"  round {i + 1} {name}: {figures}", flush=True)
    return results


def table(results: dict[str, list[dict[str, float]]]) -> str:
    (a, a_rounds), (b, b_rounds) = results.items()
    lines = [
        f"| figure | {a} (median) | {b} (median) | {b}/{a} | rounds |",
        "|---|---:|---:|---:|---|",
    ]
    for key in a_rounds[0]:
        median_a = statistics.median(r[key] for r in a_rounds)
        median_b = statistics.median(r[key] for r in b_rounds)
        ratio = f"{median_b / median_a:.3f}" if median_a else "-"
        each = "; ".join(
            f"{ra[key]:.3g} / {rb[key]:.3g}" for ra, rb in zip(a_rounds, b_rounds, strict=True)
        )
        lines.append(f"| {key} | {median_a:.3g} | {median_b:.3g} | {ratio} | {each} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare against (A)")
    parser.add_argument("--head", help="the revision to measure (B); default: this checkout")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument(
        "--only", choices=("command", "reactors"), help="measure one of the two groups"
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(worktree(args.base))
        head = stack.enter_context(worktree(args.head)) if args.head else ROOT
        trees: dict[str, Path] = {
            f"base {args.base[:7]}": base,
            f"head {args.head[:7]}" if args.head else "this checkout": head,
        }
        reports: list[str] = []
        groups: dict[str, Callable[[Path], dict[str, Any]]] = {
            "command": command_round,
            "reactors": reactors_round,
        }
        for group, measure in groups.items():
            if args.only and args.only != group:
                continue
            print(f"== {group}", flush=True)
            reports.append(f"### {group}\n\n{table(interleave(args.rounds, trees, measure))}")
    print("\n\n".join(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
