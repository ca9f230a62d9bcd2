"""Starts the platform's processes, watches them, and stops them all cleanly.

Each service runs as ``python -m <package>.app`` with ``PORT`` set, like a Cloud Run container.
Children get their own session, so a Ctrl-C reaches only the supervisor, which then stops them in
reverse order: SIGTERM, a grace period, then SIGKILL for any that linger. A child that exits is
restarted; each process's restarts since start-up are kept in ``<log dir>/restarts.json``
(``read_restarts``), which ``meridian status`` shows.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from meridian.catalog import Catalog, PushDelivery, ServiceSpec
from meridian.config import Settings
from meridian.observability import get_logger

log = get_logger(__name__)

RESTARTS_FILE = "restarts.json"


def read_restarts(log_dir: Path) -> dict[str, int]:
    """Restarts per process name since the supervisor logging to ``log_dir`` started (none when it
    never restarted one, or never ran)."""
    try:
        counts = json.loads((log_dir / RESTARTS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(name): int(count) for name, count in counts.items()}


@dataclass(frozen=True)
class ServiceProcess:
    """One process to run: its name, command line and the port its health check answers on;
    ``service`` is the catalog service it belongs to (its name unless the service runs as several
    processes) and ``env`` what its environment adds."""

    name: str
    argv: Sequence[str]
    port: int | None
    health_path: str = "/healthz"
    env: Mapping[str, str] = field(default_factory=dict)
    service: str = ""

    def belongs_to(self, service: str) -> bool:
        return service in (self.name, self.service)


# Embedded-only stand-ins for third parties (an SMS provider, a client's billing API): they are not
# Meridian services, so they are not in the catalog, but the embedded runtime runs them locally.
EMBEDDED_EXTERNALS: dict[str, str] = {
    "sms-gateway": "meridian.embedded.external.sms_gateway",
    "billing-api": "meridian.embedded.external.billing_api",
}


def runs_locally(spec: ServiceSpec, settings: Settings) -> bool:
    """Whether the embedded runtime runs a catalog service: the migration bridge's (a package of
    ``services.sync``, the legacy writer) only when ``MERIDIAN_LEGACY_DSN`` names the monolith's
    PostgreSQL it writes; with no monolith there is no bridge to run."""
    package = spec.package
    return bool(settings.legacy.dsn) or not (
        package == "services.sync" or package.startswith("services.sync.")
    )


def local_catalog(catalog: Catalog, settings: Settings) -> Catalog:
    """The catalog as the embedded runtime deploys it: without the services it does not run
    (``runs_locally``), their push subscriptions and those keeping their dead letters. Applied to
    the broker with the services' subscriptions, pushes to a service that is not there would fail
    until every message dead-lettered."""
    services = {n: s for n, s in catalog.services.items() if runs_locally(s, settings)}
    dropped = {
        n
        for n, s in catalog.subscriptions.items()
        if isinstance(s.delivery, PushDelivery) and s.delivery.service not in services
    }
    unkept = {catalog.subscriptions[n].dead_letter_topic for n in dropped}
    subscriptions = {
        n: s for n, s in catalog.subscriptions.items() if n not in dropped and s.topic not in unkept
    }
    return dataclasses.replace(catalog, services=services, subscriptions=subscriptions)


def runnable_services(catalog: Catalog, settings: Settings) -> list[ServiceProcess]:
    """The platform process, then every catalog service whose ``<package>.app`` module exists
    and that runs locally (``runs_locally``).

    The list grows by itself as services are built: a service is started once its package has an
    ``app`` entrypoint.
    """
    processes = [
        ServiceProcess(
            "platform",
            [sys.executable, "-m", "meridian.runtime.platform"],
            settings.port_of("platform"),
        )
    ]
    for name, module in EMBEDDED_EXTERNALS.items():
        if settings.backend == "embedded" and _module_exists(module):
            processes.append(
                ServiceProcess(name, [sys.executable, "-m", module], settings.port_of(name))
            )
    for name, spec in catalog.services.items():
        if spec.kind == "pipeline":
            # Locally a pipeline streams on the DirectRunner in its own process, with no port
            # (start-up does not wait for it); with the gcp backend it runs on Dataflow instead.
            if settings.backend == "embedded" and _module_exists(f"{spec.package}.__main__"):
                argv = [sys.executable, "-m", spec.package, "--streaming"]
                processes.append(ServiceProcess(name, argv, None))
            continue
        if not _module_exists(f"{spec.package}.app") or not runs_locally(spec, settings):
            continue
        argv = [sys.executable, "-m", f"{spec.package}.app"]
        processes.append(
            ServiceProcess(
                name, argv, settings.port_of(name), env=spec.env, service=spec.part_of or name
            )
        )
    return processes


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the supervisor dies, so that
    even a supervisor killed with SIGKILL leaves no orphaned service behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@dataclass
class Supervisor:
    settings: Settings
    services: Sequence[ServiceProcess]
    log_dir: Path
    grace_seconds: float = 10.0
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _restarts: dict[str, list[float]] = field(default_factory=dict)
    _restart_counts: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._record_restarts()  # a new start counts from zero
        for service in self.services:
            self._spawn(service)

    def _spawn(self, service: ServiceProcess) -> None:
        env = {
            **os.environ,
            "MERIDIAN_SERVICE": service.name,
            "MERIDIAN_BACKEND": self.settings.backend,
            "MERIDIAN_DATA_DIR": str(self.settings.data_dir.resolve()),
            "MERIDIAN_HOST": self.settings.host,
            "MERIDIAN_BASE_PORT": str(self.settings.base_port),
            "PYTHONUNBUFFERED": "1",
            **service.env,
        }
        if service.port is not None:
            env["PORT"] = str(service.port)
        logfile = (self.log_dir / f"{service.name}.log").open("ab")
        self._children[service.name] = subprocess.Popen(
            list(service.argv),
            env=env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        logfile.close()  # the child holds its own descriptor
        log.info(
            "service started",
            name=service.name,
            pid=self._children[service.name].pid,
            port=service.port,
        )

    def wait_healthy(
        self, timeout_s: float | None = None, signals: StopSignals | None = None
    ) -> None:
        """Block until every service answers its health check; raise if one dies or times out,
        or StopRequested if a stop signal arrives meanwhile. The timeout (by default
        ``Settings.embedded.start_timeout_s``, MERIDIAN_START_TIMEOUT, 90 s) is generous: a dozen
        Python processes importing at once on two cores is slow."""
        if timeout_s is None:
            timeout_s = self.settings.embedded.start_timeout_s
        deadline = time.monotonic() + timeout_s
        pending = [s for s in self.services if s.port is not None]
        with httpx.Client(timeout=1.0) as client:
            while pending:
                if signals is not None:
                    signals.check()
                dead = self.dead()
                if dead:
                    raise RuntimeError(
                        f"{', '.join(dead)} exited during start-up; see {self.log_dir}"
                    )
                still = []
                for service in pending:
                    url = f"http://{self.settings.host}:{service.port}{service.health_path}"
                    try:
                        if client.get(url).status_code != 200:
                            still.append(service)
                    except httpx.HTTPError:
                        still.append(service)
                pending = still
                if pending and time.monotonic() > deadline:
                    names = ", ".join(s.name for s in pending)
                    raise TimeoutError(
                        f"{names} not healthy after {timeout_s:.0f} s; see {self.log_dir}"
                    )
                if pending:
                    time.sleep(0.1)

    def restart_dead(self, max_restarts: int = 5, window_s: float = 60.0) -> list[str]:
        """Restart children that exited, as Cloud Run replaces a crashed instance; returns the
        names of those that crash-looped (more than ``max_restarts`` in ``window_s``)."""
        looping = []
        now = time.monotonic()
        for service in self.services:
            child = self._children.get(service.name)
            if child is None or child.poll() is None:
                continue
            recent = [t for t in self._restarts.get(service.name, []) if now - t < window_s]
            if len(recent) >= max_restarts:
                looping.append(service.name)
                continue
            log.warning("service exited; restarting it", name=service.name, code=child.returncode)
            self._restarts[service.name] = [*recent, now]
            self._restart_counts[service.name] = self._restart_counts.get(service.name, 0) + 1
            self._record_restarts()
            self._spawn(service)
        return looping

    def _record_restarts(self) -> None:
        """Replace the restarts file whole, so a reader never sees half of it."""
        path = self.log_dir / RESTARTS_FILE
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self._restart_counts, sort_keys=True))
        os.replace(partial, path)

    def dead(self) -> list[str]:
        return [name for name, child in self._children.items() if child.poll() is not None]

    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self._children.items()}

    def stop(self) -> dict[str, int]:
        """Stop every child (reverse start order); returns each one's exit code."""
        children = list(reversed(self._children.items()))
        for _, child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for name, child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service did not stop in time; killing it", name=name)
                child.kill()
                child.wait()
        codes = {name: child.returncode for name, child in self._children.items()}
        self._children.clear()
        return codes


class StopRequested(Exception):
    """A signal asked the supervisor to stop while it was still starting services."""


class StopSignals:
    """Records SIGINT/SIGTERM from the moment it is entered, so a Ctrl-C during start-up still
    stops every child instead of orphaning them (they run in their own sessions)."""

    def __init__(self) -> None:
        self.reason = ""
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, _frame: object) -> None:
        self.reason = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self) -> None:
        if self.reason:
            raise StopRequested(self.reason)


def run_until(supervisor: Supervisor, signals: StopSignals, duration_s: float | None) -> str:
    """Wait until ``duration_s`` passes (None: forever), a stop signal arrives, or a child keeps
    crashing (a child that exits is restarted). Returns why it stopped."""
    deadline = None if not duration_s else time.monotonic() + duration_s
    while True:
        if signals.reason:
            return signals.reason
        if deadline is not None and time.monotonic() >= deadline:
            return "duration elapsed"
        if looping := supervisor.restart_dead():
            return f"{', '.join(looping)} kept crashing"
        time.sleep(0.1)
