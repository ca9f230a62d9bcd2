"""The supervisor counts each process's restarts in ``logs/restarts.json`` and `meridian status`
shows them: a supervised process killed twice is restarted twice, and its row says so."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from meridian.config import Settings
from meridian.runtime.status_cli import app as status_app
from meridian.runtime.supervisor import ServiceProcess, Supervisor, read_restarts
from tests.e2e.conftest import free_port_block

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _kill_and_await_restart(supervisor: Supervisor, name: str) -> None:
    pid = supervisor.pids()[name]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while supervisor.pids()[name] == pid:
        assert time.monotonic() < deadline, f"{name} was not restarted"
        assert supervisor.restart_dead() == []
        time.sleep(0.05)


def test_a_killed_process_is_restarted_and_its_count_rises_in_status(tmp_path: Path) -> None:
    base_port = free_port_block(24)
    settings = Settings(data_dir=tmp_path, base_port=base_port)
    log_dir = tmp_path / "logs"
    supervisor = Supervisor(
        settings,
        [
            ServiceProcess("billing", SLEEPER, None),
            ServiceProcess("live-map-writer", SLEEPER, None),
        ],
        log_dir,
        grace_seconds=2,
    )
    try:
        supervisor.start()
        assert read_restarts(log_dir) == {}

        _kill_and_await_restart(supervisor, "billing")
        assert read_restarts(log_dir) == {"billing": 1}
        _kill_and_await_restart(supervisor, "billing")
        _kill_and_await_restart(supervisor, "live-map-writer")
        assert read_restarts(log_dir) == {"billing": 2, "live-map-writer": 1}

        done = CliRunner().invoke(
            status_app,
            ["--json", "--data-dir", str(tmp_path)],
            env={"MERIDIAN_BACKEND": "embedded", "MERIDIAN_BASE_PORT": str(base_port)},
        )
    finally:
        supervisor.stop()
    assert done.exit_code == 1, done.output  # nothing answers /healthz here
    services = {s["service"]: s for s in json.loads(done.stdout)["services"]}
    assert services["billing"]["restarts"] == 2
    assert services["live-map"]["restarts"] == 1  # its writer is part of it
    assert services["command"]["restarts"] == 0

    restarted_again = Supervisor(settings, [], log_dir)
    restarted_again.start()  # a new start counts from zero
    assert read_restarts(log_dir) == {}
