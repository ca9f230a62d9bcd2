"""End-to-end fixtures: real processes, real HTTP on loopback, random ports and data dirs."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MERIDIAN = [sys.executable, "-m", "meridian.cli"]


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
