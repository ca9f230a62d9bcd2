"""End-to-end fixtures: real processes, real HTTP on loopback, random ports and data dirs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from meridian.config import PORT_OFFSETS

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout_s: float = 20, what: str = "") -> T:
    """The first truthy answer of ``probe``, asked every 0.1 s; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        time.sleep(0.1)


ROOT = Path(__file__).resolve().parents[2]
MERIDIAN = [sys.executable, "-m", "meridian.runtime.cli"]


def free_port_block(size: int = 16) -> int:
    """A base port such that base … base+size-1 are all free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports on loopback")


@pytest.fixture
def runtime_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a `meridian` process with its own data dir and ports."""
    return {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(tmp_path / "data"),
        "MERIDIAN_BASE_PORT": str(free_port_block()),
        "MERIDIAN_HOST": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }


def listening_pids(port: int) -> list[int]:
    """Pids of the processes listening on ``port`` on this machine (read from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    found.add(int(pid))
        except OSError:
            continue
    return sorted(found)


@dataclass
class Runtime:
    """A `meridian up` process tree on its own data dir and ports."""

    process: subprocess.Popen[str]
    data_dir: Path
    base_port: int

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.base_port + PORT_OFFSETS[service]}"


def start_runtime(env: dict[str, str], services: tuple[str, ...], timeout_s: float = 60) -> Runtime:
    process = subprocess.Popen(
        [*MERIDIAN, "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runtime = Runtime(process, Path(env["MERIDIAN_DATA_DIR"]), int(env["MERIDIAN_BASE_PORT"]))
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(
                f"runtime did not come up: {process.stdout.read() if process.stdout else ''}"
            )
        try:
            httpx.get(f"{runtime.url(pending[0])}/healthz", timeout=1).raise_for_status()
            pending.pop(0)
        except httpx.HTTPError:
            time.sleep(0.2)
    return runtime


def stop_runtime(runtime: Runtime) -> str:
    runtime.process.send_signal(signal.SIGINT)
    try:
        output, _ = runtime.process.communicate(timeout=30)
    finally:
        runtime.process.kill()
    return output
