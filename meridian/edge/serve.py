"""Serve an ASGI app the way Cloud Run runs a container: on ``$PORT``, stopping on SIGTERM."""

from __future__ import annotations

import gc

import uvicorn

from meridian.config import Settings
from meridian.observability import configure_logging, configure_tracing


def serve(app: object, settings: Settings, service: str) -> None:
    """Serve ``app`` as ``service``: on ``settings.host``, at ``settings.port`` (``PORT``) if set,
    else at the service's own port; logs and traces configured from ``settings``."""
    configure_logging(service, settings)
    configure_tracing(service, settings=settings)
    # Everything built so far (modules, the app, the catalog, the adapters) lives as long as the
    # process: moved out of the collector's generations, it is not walked again by each full
    # collection a busy service sets off (one walk of the ~180k objects of the command service
    # cost ~100 ms of CPU every ~500 telemetry batches; the live-map writer's collector share
    # fell from 8% to 4%). Here, not where apps are built: a test process builds many apps and
    # must be able to collect them.
    gc.freeze()
    uvicorn.run(
        app,  # type: ignore[arg-type]  # any ASGI application
        host=settings.host,
        port=settings.port if settings.port is not None else settings.port_of(service),
        log_level=settings.observability.server_log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
