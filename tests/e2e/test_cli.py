"""The `meridian` command as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from meridian.catalog import load_catalog
from meridian.embedded.pubsub import Broker
from meridian.ports import Message
from tests.e2e.conftest import MERIDIAN, ROOT, listening_pids

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
    assert "subscriptions.x.topic" in " ".join(result.stdout.split())


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
    assert "billing-dead-letters" in absent.stdout and "apply the catalog" in absent.stdout

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
    assert "no subscription 'invoicing'" in " ".join(unknown.stdout.split())


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


def test_demo_runs_the_scenario_and_exits_after_its_duration(runtime_env: dict[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*MERIDIAN, "demo", "--duration", "12", "--parcels", "6"],
        env=runtime_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "posts a shipment of 6 parcels" in out
    assert "event ParcelDelivered p-demo-000" in out  # the fact reached the bus through Eventarc
    assert "Events on logistics.events" in out
    assert "demo finished" in out
    assert 8 < elapsed < 40, elapsed
