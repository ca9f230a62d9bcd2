"""Cloud Run's contract for every service ``meridian serve`` runs (``meridian/edge/serve.py``).

Cloud Run sends SIGTERM, then SIGKILL 10 s later: a service must stop within that, cleanly (exit
0), even with a stream open (the live map's Server-Sent Events never end by themselves). It
binds every interface when ``K_SERVICE`` says it runs on Cloud Run; these tests keep to loopback
(``MERIDIAN_HOST``), so that part is checked on ``Settings``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from meridian.config import Settings
from tests.e2e.conftest import ROOT, eventually, free_port_block

CLOUD_RUN_KILLS_AFTER_S = 10
MERIDIAN = str(ROOT / ".venv" / "bin" / "meridian")


def test_on_cloud_run_a_service_binds_every_interface_on_port() -> None:
    settings = Settings.from_env({"K_SERVICE": "meridian-eta", "PORT": "8080"})
    assert (settings.host, settings.port, settings.cloud_run_service) == (
        "0.0.0.0",
        8080,
        "meridian-eta",
    )
    assert Settings.from_env({}).host == "127.0.0.1"  # elsewhere, loopback
    explicit = Settings.from_env({"K_SERVICE": "meridian-eta", "MERIDIAN_HOST": "127.0.0.1"})
    assert explicit.host == "127.0.0.1"


def _serve(service: str, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PORT": str(port),
        "K_SERVICE": f"meridian-{service}",
        "MERIDIAN_HOST": "127.0.0.1",
        "MERIDIAN_DATA_DIR": str(tmp_path / "data"),
    }
    log = (tmp_path / f"{service}.log").open("wb")
    return subprocess.Popen(
        [MERIDIAN, "serve", service], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stops_cleanly(child: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    try:
        code = child.wait(timeout=CLOUD_RUN_KILLS_AFTER_S)
    except subprocess.TimeoutExpired:
        child.kill()
        raise AssertionError("still running 10 s after SIGTERM: Cloud Run would kill it") from None
    assert code == 0, f"exit {code} after SIGTERM"
    return time.monotonic() - started


@pytest.mark.e2e
def test_services_stop_on_sigterm_within_cloud_runs_grace(tmp_path: Path) -> None:
    base = free_port_block(2)
    eta = _serve("eta", base, tmp_path)
    live_map = _serve("live-map", base + 1, tmp_path)
    children = (eta, live_map)
    try:
        for port in (base, base + 1):
            url = f"http://127.0.0.1:{port}"
            eventually(
                lambda url=url: _healthy(url), timeout_s=30, what=f"{url} (logs in {tmp_path})"
            )
        token = subprocess.run(
            [MERIDIAN, "token", "--role", "dispatcher", "--sub", "d-1"],
            env={**os.environ, "MERIDIAN_DATA_DIR": str(tmp_path / "data")},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        streaming = threading.Event()

        def follow_the_fleet() -> None:
            # An open stream the server must end itself: it never ends from this side.
            headers = {"Authorization": f"Bearer {token}"}
            url = f"http://127.0.0.1:{base + 1}/v1/fleet/stream"
            try:
                with httpx.stream("GET", url, headers=headers, timeout=30) as answer:
                    assert answer.status_code == 200
                    for _ in answer.iter_bytes():
                        streaming.set()
            except httpx.HTTPError:
                pass

        reader = threading.Thread(target=follow_the_fleet, daemon=True)
        reader.start()
        assert streaming.wait(10), "the fleet stream did not open"

        assert _stops_cleanly(eta) < CLOUD_RUN_KILLS_AFTER_S
        assert _stops_cleanly(live_map) < CLOUD_RUN_KILLS_AFTER_S
        reader.join(5)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
