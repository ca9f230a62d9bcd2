"""An ASGI app served by uvicorn on a free loopback port for the length of a test, for the
contract suites whose adapters speak HTTP to a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from .conftest import free_port
from .external_contract import TIMEOUT_S

START_S = 20.0  # a guard against a server that never starts, not a timing assertion


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app``; yields its base URL (``http://127.0.0.1:<port>``)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_S)


class ServedStandIn:
    """For a contract subclass whose adapter speaks HTTP to one of the embedded providers' stand-
    ins (SMS gateway, billing API): serves ``stand_in(data_dir)`` for each test at
    ``self.base_url``, and brings its failures about through its ``PUT /v1/config``."""

    @staticmethod
    def stand_in(data_dir: Path) -> Any:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _serve_stand_in(self, tmp_path: Path) -> Iterator[None]:
        with served(self.stand_in(tmp_path)) as base_url:
            self.base_url = base_url
            yield

    def _configure(self, latency_s: float = 0.0, failure_rate: float = 0.0) -> None:
        config = {"latency_s": latency_s, "failure_rate": failure_rate}
        httpx.put(f"{self.base_url}/v1/config", json=config).raise_for_status()

    def fail(self) -> None:
        self._configure(failure_rate=1.0)

    def slow(self) -> None:
        self._configure(latency_s=TIMEOUT_S * 3)

    def recover(self) -> None:
        self._configure()
