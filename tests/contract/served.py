"""An ASGI app served by uvicorn on a free loopback port for the length of a test, for the
contract suites whose adapters speak HTTP to a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from .conftest import free_port

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
