"""`meridian status --json` and `/metrics` over real processes (#22 items 3 and 4): the platform,
the command service, the event publisher and one reactor (billing, with its provider stand-in).
A delivery made while the reactor is stopped shows as a backlog on its subscription; restarted,
the reactor drains it; and the services' /metrics, read with Prometheus' parser, moved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meridian.config import Settings
from tests.e2e import test_reactors
from tests.e2e.conftest import MERIDIAN, ROOT, Runtime, eventually, free_port_block

pytestmark = pytest.mark.e2e
SERVICES = {
    name: test_reactors.MODULES[name]
    for name in ("platform", "billing-api", "command", "event-publisher", "billing")
}


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Runtime, dict[str, str], list[subprocess.Popen[bytes]]]]:
    data_dir = tmp_path_factory.mktemp("status")
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_BASE_PORT": str(free_port_block(24)),
        "MERIDIAN_EVENTARC_MIN_BACKOFF": "0.5",
        "MERIDIAN_EVENTARC_MAX_BACKOFF": "2",
        "MERIDIAN_LOG_LEVEL": "WARNING",
    }
    with mock.patch.dict(test_reactors.MODULES, SERVICES, clear=True):
        runtime, processes = test_reactors.start_services(env, data_dir)
    yield runtime, env, processes
    test_reactors.stop_services(processes)


def status(runtime: Runtime, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [*MERIDIAN, "status", "--json", "--data-dir", str(runtime.data_dir)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr.decode()  # 1: some catalog service is down
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def backlog_of(runtime: Runtime, env: dict[str, str], subscription: str) -> int:
    (row,) = [s for s in status(runtime, env)["subscriptions"] if s["subscription"] == subscription]
    return int(row["backlog"])


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_stopped_reactors_backlog_rises_then_drains_and_metrics_move(
    platform: tuple[Runtime, dict[str, str], list[subprocess.Popen[bytes]]],
) -> None:
    runtime, env, processes = platform
    client = test_reactors._client(runtime)
    (parcel,) = test_reactors._send_out(runtime, client, 1, f"r-{os.urandom(3).hex()}")
    eventually(lambda: backlog_of(runtime, env, "billing") == 0 or None, 60, "billing idle")
    deliver = {"method": "POST", "route": "/v1/parcels/{parcel_id}:deliver"}
    before = scrape(runtime.url("command"))

    billing = processes[list(SERVICES).index("billing")]
    billing.terminate()
    billing.wait(timeout=10)
    with httpx.Client(base_url=runtime.url("command"), timeout=10) as http:
        test_reactors._deliver(http, client, parcel)
    eventually(lambda: backlog_of(runtime, env, "billing") > 0 or None, 60, "a billing backlog")
    down = status(runtime, env)
    billing_row = {"service": "billing", "url": runtime.url("billing"), "up": False, "restarts": 0}
    assert billing_row in down["services"]  # started by the test, not a supervisor: no restarts
    assert "billing: down" in down["breaches"]

    settings = Settings(data_dir=runtime.data_dir, base_port=int(env["MERIDIAN_BASE_PORT"]))
    log = (runtime.data_dir / "billing.log").open("ab")
    restarted = subprocess.Popen(
        [sys.executable, "-m", SERVICES["billing"]],
        env={
            **env,
            "PORT": str(settings.port_of("billing")),
            "MERIDIAN_SERVICE": "billing",
            "PYTHONPATH": str(ROOT),
        },
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    processes.append(restarted)
    eventually(lambda: backlog_of(runtime, env, "billing") == 0 or None, 90, "billing drained")

    after = scrape(runtime.url("command"))

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("meridian_http_requests_total", **deliver, status="2xx") == 1
    assert moved("meridian_http_request_duration_seconds_count", **deliver) == 1
    pushes = scrape(runtime.url("billing"))
    acked = (
        "meridian_push_messages_total",
        frozenset({("subscription", "billing"), ("outcome", "acked")}),
    )
    assert pushes.get(acked, 0.0) >= 1  # the delivery, pushed to the restarted reactor
    assert (
        pushes[("meridian_event_lag_seconds_count", frozenset({("subscription", "billing")}))] >= 1
    )
    assert test_reactors._charges(runtime, parcel)


def test_status_once_prints_a_frame(
    platform: tuple[Runtime, dict[str, str], list[subprocess.Popen[bytes]]],
) -> None:
    runtime, env, _ = platform
    done = subprocess.run(
        [*MERIDIAN, "status", "--once", "--data-dir", str(runtime.data_dir)],
        env={**env, "COLUMNS": "160"},
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    out = done.stdout.decode()
    assert "subscriptions" in out and "billing" in out and "eventarc" in out, out
