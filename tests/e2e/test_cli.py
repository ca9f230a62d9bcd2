"""The `meridian` command as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from meridian.catalog import load_catalog
from meridian.config import PORT_OFFSETS
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.pubsub import Broker
from meridian.ports import Message, Query
from tests.e2e.conftest import MERIDIAN, ROOT, listening_pids, start_runtime, stop_runtime

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_catalog_prints_topics_event_types_and_subscriptions(runtime_env: dict[str, str]) -> None:
    result = subprocess.run(
        [*MERIDIAN, "catalog"],
        env={**runtime_env, "COLUMNS": "200"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for expected in (
        "vehicle.telemetry",
        "billing.dlq",
        "ParcelDelivered",
        "client-webhook",
        "push → billing/events",
        'attributes.eventType = "ParcelDelivered"',
    ):
        assert expected in result.stdout


def test_catalog_refuses_a_broken_file(runtime_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "catalog.yaml"
    broken.write_text(
        "version: 1\nservices: {}\ntopics: {}\nevent_types: {}\nsubscriptions: {x: {}}\n"
    )
    result = subprocess.run(
        [*MERIDIAN, "catalog", "--catalog", str(broken)],
        env=runtime_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "subscriptions.x.topic" in " ".join(result.stderr.split())  # an error: on stderr


def _meridian(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MERIDIAN, *args],
        env={**env, "COLUMNS": "200"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_replay_dead_letters_lists_then_replays_all_of_one_consumers(
    runtime_env: dict[str, str],
) -> None:
    data_dir = Path(runtime_env["MERIDIAN_DATA_DIR"])
    absent = _meridian(runtime_env, "replay-dead-letters", "--source", "billing")
    assert absent.returncode == 2
    assert "billing-dead-letters" in absent.stderr and "apply the catalog" in absent.stderr

    now = [time.time() - 86400]  # what the test dead-letters must be in the past
    broker = Broker(data_dir, clock=lambda: now[0])
    broker.apply_catalog(
        load_catalog(), lambda service, path: f"http://127.0.0.1:9/{service}{path}"
    )
    for consumer, event_type, count in (
        ("eta", "GeofenceCrossed", 120),
        ("billing", "ShipmentClosed", 3),
    ):
        broker.publish(
            "logistics.events",
            [Message(b"x", {"eventType": event_type, "eventId": f"e-{n}"}) for n in range(count)],
        )
        while batch := broker.pull(consumer, 1000):  # fail them until they are dead-lettered
            broker.modify_ack_deadline(consumer, [r.ack_id for r in batch], 0)
            now[0] += 601

    listed = _meridian(runtime_env, "replay-dead-letters", "--source", "billing", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert "3 dead letters of billing (dry run: none replayed)" in listed.stdout
    assert "ShipmentClosed" in listed.stdout and "GeofenceCrossed" not in listed.stdout

    replayed = _meridian(runtime_env, "replay-dead-letters", "--source", "billing")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 3 dead letters of billing" in replayed.stdout
    assert "billing-dead-letters: 3 replayed" in replayed.stderr  # progress, per batch
    assert broker.metrics("billing").dead_letter_depth == 0
    assert broker.metrics("eta").dead_letter_depth == 120

    unknown = _meridian(runtime_env, "replay-dead-letters", "--source", "invoicing")
    assert unknown.returncode == 2
    assert "no subscription 'invoicing'" in " ".join(unknown.stderr.split())


def test_up_serves_until_the_duration_then_stops_every_child(runtime_env: dict[str, str]) -> None:
    base = int(runtime_env["MERIDIAN_BASE_PORT"])
    process = subprocess.Popen(
        [*MERIDIAN, "up", "--duration", "6", "--services", "platform"],
        env=runtime_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        health = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and health is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{base}/healthz", timeout=1).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health == {"status": "ok"}
        topology = httpx.get(f"http://127.0.0.1:{base}/v1/topology", timeout=5).json()
        assert topology["subscriptions"]["billing"]["filter"].startswith("attributes.eventType")
        output, _ = process.communicate(timeout=40)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "duration elapsed" in output
    assert "all services stopped" in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{base}/healthz", timeout=1)


def test_ctrl_c_stops_up_and_its_children_cleanly(runtime_env: dict[str, str]) -> None:
    base = int(runtime_env["MERIDIAN_BASE_PORT"])
    process = subprocess.Popen(
        [*MERIDIAN, "up", "--services", "platform"],
        env=runtime_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        child_pids = listening_pids(base)
        assert child_pids, "no child listening on the platform port"
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "stopping (SIGINT)" in output
    time.sleep(0.2)
    assert not any(_alive(pid) for pid in child_pids)


def test_demo_tells_a_delivery_day_and_exits_after_its_duration(
    runtime_env: dict[str, str],
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*MERIDIAN, "demo", "--duration", "36", "--parcels", "6"],
        env=runtime_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    live_map = (
        f"http://127.0.0.1:{int(runtime_env['MERIDIAN_BASE_PORT']) + PORT_OFFSETS['live-map']}"
    )
    assert f"watch it live: {live_map}/dispatch#token=" in out
    assert "posts a shipment of 6 parcels" in out
    assert re.search(r"dispatch window w-demo-\w+ │ DISPATCHED │", out), out
    assert re.search(r"accepts route w-demo-\w+-r01", out)
    assert "cannot deliver" in out  # the day's one failure
    assert "client receiver verified ParcelDelivered p-demo-" in out
    effects = dict(re.findall(r"│ ([a-z-]+) │ [a-z ]+ │ (\d+) │", out))
    assert set(effects) == {"eta", "notification", "billing", "pod", "webhook", "driver-scoring"}
    assert all(int(count) > 0 for count in effects.values()), effects
    assert "Events on logistics.events" in out
    # the fact reached the bus through Eventarc
    assert re.search(r"│ ParcelDelivered │ [1-9]\d* │", out), out
    assert "demo finished" in out
    assert 8 < elapsed < 48, elapsed
    _reconcile_agrees_after_the_demo(runtime_env)


def _reconcile_agrees_after_the_demo(runtime_env: dict[str, str]) -> None:
    """`meridian reconcile` of the demo's day (its parcels' window end, UTC) is green. The demo
    has stopped its services, so every effect that will land has landed: ``--in-flight 0``
    checks each parcel (the default two minutes would leave all of them out)."""
    store = all_stores(Path(runtime_env["MERIDIAN_DATA_DIR"]))
    parcels = store.query(Query("parcels"))
    assert any(p.data["status"] == "DELIVERED" for p in parcels), [p.data for p in parcels]
    days = sorted({p.data["stop"]["window"]["end"].date().isoformat() for p in parcels})
    for day in days:
        reconciled = _meridian(runtime_env, "reconcile", "--day", day, "--in-flight", "0")
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert f"{day}: all agree" in reconciled.stdout


def test_version_is_the_installed_distributions(runtime_env: dict[str, str]) -> None:
    result = _meridian(runtime_env, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"meridian {version('meridian')}\n"


def _one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The error line of a command that failed as a user error should: one line, no traceback."""
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_workflows_on_a_refused_port_is_one_line_and_a_non_zero_exit(
    runtime_env: dict[str, str],
) -> None:
    platform = f"http://127.0.0.1:{runtime_env['MERIDIAN_BASE_PORT']}"  # nothing listens there
    for command in (
        ("workflows", "list", "dispatch"),
        ("workflows", "show", "exec-1"),
        ("workflows", "start", "dispatch", "--data", '{"window_id": "w-1"}'),
    ):
        line = _one_line_error(_meridian(runtime_env, *command), 1)
        assert line == f"cannot reach the platform at {platform}: is `meridian up` running?"
    elsewhere = _meridian(
        runtime_env, "workflows", "list", "dispatch", "--url", "http://127.0.0.1:9"
    )
    assert _one_line_error(elsewhere, 1).startswith(
        "cannot reach the platform at http://127.0.0.1:9:"
    )


def test_usage_errors_are_one_line_on_stderr(runtime_env: dict[str, str]) -> None:
    unknown = _meridian(runtime_env, "up", "--services", "command,teleport")
    assert _one_line_error(unknown, 2) == "unknown service(s): teleport"
    malformed = _meridian(
        {**runtime_env, "MERIDIAN_TELEMETRY_MAX_SKEW_S": "soon"}, "workflows", "list", "dispatch"
    )
    assert "MERIDIAN_TELEMETRY_MAX_SKEW_S" in _one_line_error(malformed, 2)
    not_json = _meridian(runtime_env, "workflows", "start", "dispatch", "--data", "{")
    assert _one_line_error(not_json, 2).startswith("--data is not JSON:")


def test_workflows_finds_the_engine_meridian_up_runs(runtime_env: dict[str, str]) -> None:
    """The same settings as `up` (here MERIDIAN_BASE_PORT of a free block), no --url."""
    runtime = start_runtime(runtime_env, ("platform",))
    try:
        listed = _meridian(runtime_env, "workflows", "list", "dispatch")
        assert listed.returncode == 0, listed.stderr
        assert "execution" in listed.stdout
        missing = _meridian(runtime_env, "workflows", "show", "exec-none")
        assert "exec-none" in _one_line_error(missing, 1)  # the engine's 404, as one line
    finally:
        stop_runtime(runtime)
