"""Serve an ASGI app the way Cloud Run runs a container: on ``$PORT``, stopping on SIGTERM."""

from __future__ import annotations

import os

import uvicorn

from meridian.observability import configure_logging, configure_tracing


def serve(app: object, service: str, default_port: int = 8080) -> None:
    configure_logging(service)
    configure_tracing(service)
    uvicorn.run(
        app,  # type: ignore[arg-type]  # any ASGI application
        host=os.environ.get("MERIDIAN_HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", default_port)),
        log_level=os.environ.get("MERIDIAN_LOG_LEVEL", "warning").lower(),
        access_log=False,
        timeout_graceful_shutdown=5,
    )
