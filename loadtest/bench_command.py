"""The accept-fast command path under load: Locust (headless, its own process) against one
command-service process, beside a bare FastAPI POST endpoint served the same way in the same run.

Phases: maximum throughput of each (closed loop), ``:deliver`` at 900 requests/s for 60 s and the
bare endpoint at the same rate, both again at that rate from the lighter open-loop generator
(``openloop.py``), then telemetry in 100-ping batches.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from meridian.app.records import (
    parcel_document,
    vehicle_assignment_document,
    vehicle_assignment_path,
)
from meridian.catalog import load_catalog
from meridian.config import Settings
from meridian.domain.actors import Actor
from meridian.domain.model import GeoPoint, Parcel, Recipient, Stop, TimeWindow
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.runtime.platform import prepare_data_dir
from tests.e2e.conftest import free_port_block

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = 50
RATE, STEADY_S, MAX_S, TELEMETRY_S, OPEN_S = 900, 60, 15, 20, 30
HEADER = (
    "| load | requests | errors | achieved req/s | p50 ms | p99 ms | server CPU-ms / req | CPU steal |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
)


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def _measured(pid: int, phase: Any) -> dict[str, Any]:
    """``phase()``'s figures with the server's CPU time per request and the share of the
    machine's CPU time the hypervisor took (steal): this machine is a VM whose neighbours vary,
    and a run with more steal has less CPU for the same load."""
    cpu_before, times_before = _process_cpu_s(pid), _cpu_times()
    figures: dict[str, Any] = phase()
    cpu = _process_cpu_s(pid) - cpu_before
    deltas = [after - before for before, after in zip(times_before, _cpu_times(), strict=True)]
    return {
        **figures,
        "cpu_ms": cpu * 1000 / max(figures["requests"], 1),
        "steal": deltas[7] / max(sum(deltas), 1),
    }


def _seed(data_dir: Path, count: int) -> list[tuple[str, str]]:
    """``count`` parcels out for delivery, spread over the drivers; returns (parcel, driver)."""
    store = all_stores(data_dir)
    now = datetime.now(UTC)
    window = TimeWindow(start=now, end=now + timedelta(hours=4))
    template = Parcel(
        parcel_id="p-0",
        shipment_id="s-bench",
        client_id="c-bench",
        recipient=Recipient(name="Bench", phone="+919800000000"),
        stop=Stop(location=GeoPoint(lat=12.97, lng=77.59), address="1 MG Road", window=window),
        weight_kg=1.0,
    )
    planned = []
    for start in range(0, count, 500):
        writes = []
        for i in range(start, min(count, start + 500)):
            driver = f"drv-{i % DRIVERS}"
            parcel = (
                template.model_copy(update={"parcel_id": f"p-{i}"})
                .plan("w")
                .assign("r", driver, "veh-1")
            )
            writes.append(
                (
                    "set",
                    f"parcels/p-{i}",
                    parcel_document(parcel.send_out(), now, "seed", Actor("b", "dispatcher")),
                )
            )
            planned.append((f"p-{i}", driver))
        store.batch_write(writes)
    # The telemetry scenario posts as drv-0 for veh-1: a driver may report only its own vehicle.
    desk = Actor("b", "dispatcher")
    assignment = vehicle_assignment_document("veh-1", "drv-0", now, "seed", desk)
    store.set(vehicle_assignment_path("veh-1"), assignment)
    store.close()
    return planned


def _serve(module: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{module} did not start")


def _locust(
    host: str, plan: dict[str, object], users: int, seconds: int, rate: float, workdir: Path
) -> dict[str, float]:
    plan_file = workdir / "plan.json"
    plan_file.write_text(json.dumps(plan))
    prefix = workdir / f"locust-{plan['scenario']}-{int(time.time() * 1000)}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtest" / "locustfile.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            host,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "ERROR",
            "--stop-timeout",
            "5",
        ],
        cwd=ROOT,
        env={**os.environ, "LOADTEST_PLAN": str(plan_file), "LOADTEST_USER_RATE": str(rate)},
        check=False,
        capture_output=True,
        timeout=seconds + 60,
    )
    with open(f"{prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {
        "requests": float(row["Request Count"]),
        "failures": float(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
    }


def _open_loop(
    host: str, plan: dict[str, object], rate: int, seconds: int, workdir: Path
) -> dict[str, Any]:
    """The same load from ``loadtest/openloop.py`` instead of Locust (see its docstring)."""
    plan_file = workdir / "plan.json"
    plan_file.write_text(json.dumps(plan))
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.openloop", str(plan_file), host, str(rate), str(seconds)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return {**figures, "failures": figures["errors"]}


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        base = free_port_block()
        settings = Settings(data_dir=data_dir, base_port=base)
        prepare_data_dir(load_catalog(), settings)
        parcels = _seed(data_dir, RATE * (STEADY_S + OPEN_S) + 65_000)
        issuer = LocalIdentityIssuer(data_dir)
        tokens = {f"drv-{i}": issuer.token(f"drv-{i}", "driver") for i in range(DRIVERS)}
        env = {**os.environ, "MERIDIAN_DATA_DIR": str(data_dir), "MERIDIAN_LOG_LEVEL": "WARNING"}
        bare = _serve("loadtest.bare_app", base + 14, env)
        command = _serve("services.command.app", base + 1, env)
        bare_url, command_url = f"http://127.0.0.1:{base + 14}", f"http://127.0.0.1:{base + 1}"
        try:
            bare_max = _measured(
                bare.pid, lambda: _locust(bare_url, {"scenario": "bare"}, 32, MAX_S, 0, workdir)
            )
            cursor = 0

            def take(n: int) -> list[tuple[str, str]]:
                nonlocal cursor
                chunk, cursor = parcels[cursor : cursor + n], cursor + n
                return chunk

            def deliveries(n: int) -> dict[str, Any]:
                return {"scenario": "deliver", "tokens": tokens, "parcels": take(n)}

            deliver_max = _measured(
                command.pid,
                lambda: _locust(command_url, deliveries(50_000), 32, MAX_S, 0, workdir),
            )
            steady = _measured(
                command.pid,
                lambda: _locust(
                    command_url,
                    deliveries(RATE * STEADY_S + 5000),
                    RATE // 10,
                    STEADY_S,
                    10,
                    workdir,
                ),
            )
            bare_steady = _measured(
                bare.pid,
                lambda: _locust(bare_url, {"scenario": "bare"}, RATE // 10, 30, 10, workdir),
            )
            open_deliver = _measured(
                command.pid,
                lambda: _open_loop(
                    command_url, deliveries(RATE * OPEN_S + 5000), RATE, OPEN_S, workdir
                ),
            )
            open_bare = _measured(
                bare.pid,
                lambda: _open_loop(bare_url, {"scenario": "bare"}, RATE, OPEN_S, workdir),
            )
            telemetry = _measured(
                command.pid,
                lambda: _locust(
                    command_url,
                    {"scenario": "telemetry", "tokens": tokens},
                    8,
                    TELEMETRY_S,
                    0,
                    workdir,
                ),
            )
        finally:
            for process in (bare, command):
                process.terminate()
                process.wait(timeout=10)

    def row(label: str, r: dict[str, float]) -> str:
        return (
            f"| {label} | {r['requests']:,.0f} | {r['failures']:,.0f} | {r['rps']:,.0f} "
            f"| {r['p50']:.0f} | {r['p99']:.0f} | {r['cpu_ms']:.2f} | {r['steal']:.1%} |"
        )

    ratio = deliver_max["rps"] / bare_max["rps"]
    p99_ratio = steady["p99"] / max(bare_steady["p99"], 1)
    return "\n".join(
        [
            "## Command path: `:deliver` and telemetry on one command-service process",
            "",
            "Locust (headless, FastHttpUser, its own process) on loopback; the bare baseline is a FastAPI POST "
            "with a pydantic body of the same shape, no auth, no store (`loadtest/bare_app.py`), served by the "
            "same uvicorn setup.",
            "",
            *HEADER,
            row(f"`:deliver` at {RATE} req/s for {STEADY_S} s", steady),
            row(f"bare POST at {RATE} req/s for 30 s (baseline)", bare_steady),
            row(f"`:deliver`, closed loop, 32 users, {MAX_S} s (max throughput)", deliver_max),
            row(f"bare POST, closed loop, 32 users, {MAX_S} s (max throughput)", bare_max),
            row(f"telemetry, 100-ping batches, 8 users, {TELEMETRY_S} s", telemetry),
            "",
            "The same rate from a lighter, open-loop generator (`loadtest/openloop.py`: each request "
            "sent at its planned time over keep-alive connections and timed from then, about half "
            "of Locust's CPU), to tell the generator's share of the latency from the service's:",
            "",
            *HEADER,
            row(f"`:deliver` at {RATE} req/s for {OPEN_S} s, open loop", open_deliver),
            row(f"bare POST at {RATE} req/s for {OPEN_S} s, open loop (baseline)", open_bare),
            "",
            *[
                f"Open-loop errors ({label}), by what the request got: {kinds}; the generator "
                "gives each request 10 s."
                for label, kinds in (
                    ("`:deliver`", open_deliver["error_kinds"]),
                    ("bare", open_bare["error_kinds"]),
                )
                if kinds
            ],
            "",
            f"- `:deliver` max throughput is **{ratio:.0%} of the bare endpoint** (aim ≥ 50%); each request "
            "verifies an RS256 token, reads and writes the parcel and the idempotency ledger in one SQLite "
            "transaction, and appends the change the Eventarc emulation tails.",
            f"- `:deliver` p99 at {RATE} req/s: **{steady['p99']:.0f} ms** (aim ≤ 25 ms), "
            f"{p99_ratio:.1f}× the bare endpoint's p99 at the same rate; open loop "
            f"{open_deliver['p99']:.0f} ms against the bare endpoint's {open_bare['p99']:.0f} ms.",
            f"- Telemetry: **{telemetry['rps'] * 100:,.0f} pings/s** accepted and published to "
            "`vehicle.telemetry` (aim ≥ 15,000).",
            "- Load generator and server share this 2-core machine, so absolute figures include the "
            "generator's own CPU use; the ratios compare like with like.",
            "- *Server CPU-ms / req*: the service process's CPU time (user and system) per request "
            "in the phase (for telemetry, per 100-ping batch). *CPU steal*: the share of the "
            "machine's CPU time the hypervisor gave to other tenants in the phase; one process "
            "near a full core loses that share of its capacity.",
        ]
    )
