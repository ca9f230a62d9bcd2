"""Serve an ASGI app the way Cloud Run runs a container.

Cloud Run's contract, kept here for every service: listen on ``$PORT`` (``Settings.port``), on
every interface when running there (``K_SERVICE`` set: ``Settings.host`` is then ``0.0.0.0``, so
its startup probe reaches ``/healthz``), log JSON lines with the trace field
(``meridian.observability``), and stop on SIGTERM well inside the 10 s Cloud Run allows between
SIGTERM and SIGKILL: requests in flight get 5 s to finish, the app's shutdown runs, and the
process exits 0 (``tests/e2e/test_serve_sigterm.py``).
"""

from __future__ import annotations

import gc
import signal
import threading
from types import FrameType

import uvicorn

from meridian.config import Settings
from meridian.observability import configure_logging, configure_tracing

# Cloud Run sends SIGKILL 10 s after SIGTERM; this leaves the app's shutdown the other 5 s.
GRACEFUL_SHUTDOWN_S = 5


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(app: object, settings: Settings, service: str) -> None:
    """Serve ``app`` as ``service``: on ``settings.host``, at ``settings.port`` (``PORT``) if set,
    else at the service's own port; logs and traces configured from ``settings``."""
    configure_logging(service, settings)
    configure_tracing(service, settings=settings)
    if threading.current_thread() is threading.main_thread():
        # uvicorn stops gracefully on SIGTERM, then restores this handler and raises the signal
        # again: the process exits 0 through the interpreter's normal exit (atexit hooks, such
        # as the span exporter's flush, run) instead of dying of the signal.
        signal.signal(signal.SIGTERM, _stopped)
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
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
