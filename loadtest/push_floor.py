"""The floor the push transport puts under the reactors: the CPU of one push when the receiver
does nothing.

One push is what the platform does for a reactor, on the same code: its push loop
(``PushDispatcher``, run in a uvicorn-served process as ``meridian.runtime.platform`` runs it)
pulls the message, signs the OIDC token (``TokenIssuer``), POSTs the envelope with the lean
HTTP/1.1 client and acks in groups. The receivers are what a reactor is before its handler: each
its own uvicorn process (``meridian.edge.serve``) with a ``PlainRoutes`` ``POST /events`` that
checks the token as reactors do (``RememberedTokens`` over the data directory's verifier),
decodes the envelope (``decode_envelope``), notes the time and answers 204.

The data directory is prepared from the catalog as for ``meridian up``; the ParcelDelivered
subscriptions on ``logistics.events`` (with their filters, ordering and dead-letter policies) are
pointed at the receivers. Fewer receivers than the catalog's fan-out drop the rest; more add
copies of them. Messages are real ParcelDelivered events (Avro body and attributes from the
codec), published one per call at the rate asked, after a short warm-up (connections opened,
tokens signed and verified once) and a few idle seconds, whose CPU is reported on its own: the
push loops watch the broker for changes while idle, so part of the sender's CPU is paid whatever
the rate. CPU is user + system time from ``/proc/<pid>/stat``, read before the first publish and
after the last ack (so it includes the loops' idle waits between messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from meridian.adapters import push_authenticator
from meridian.catalog import Catalog, PushDelivery, load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.events import ParcelDelivered, derive_event_id
from meridian.edge.fast_routes import PlainRequest, PlainResponse, PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.edge.push import decode_envelope
from meridian.edge.push_auth import RememberedTokens
from meridian.edge.serve import serve
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.push import PushDispatcher
from meridian.ports import Message
from meridian.runtime.platform import prepare_data_dir
from tests.e2e.conftest import free_port_block
from tests.e2e.test_reactors import stop_services

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "logistics.events"
WARM_UP = 20  # messages pushed before measuring
IDLE_S = 3.0  # then nothing published for this long, to see what the loops cost when idle
DRAIN_S = 30.0
START_S = 60.0
RECEIPTS = "received-{port}.json"


@dataclass(frozen=True)
class Floor:
    """What one run measured; CPU over the phase, from the first publish to the last ack."""

    rate: float
    seconds: float
    fan_out: int
    published: int
    publish_rate: float  # achieved
    pushes: int  # acknowledged by the broker
    drained_s: float | None  # after the last publish; None if not drained in time
    wall_s: float
    sender_cpu_s: float
    receivers_cpu_s: float
    idle_sender_cores: float  # CPU-s per s with nothing to push, before the phase
    idle_receivers_cores: float
    latency_ms: tuple[float, float] | None  # publish → received, p50 / p95

    def ms_per_push(self) -> tuple[float, float, float]:
        """CPU-ms per push: sender, receiver, total."""
        pushes = max(1, self.pushes)
        sender = self.sender_cpu_s * 1000 / pushes
        receiver = self.receivers_cpu_s * 1000 / pushes
        return sender, receiver, sender + receiver

    def summary(self) -> str:
        sender, receiver, total = self.ms_per_push()
        drained = f"{self.drained_s:.1f} s" if self.drained_s is not None else "NOT drained"
        latency = (
            f"{self.latency_ms[0]:.0f} / {self.latency_ms[1]:.0f} ms" if self.latency_ms else "–"
        )
        return (
            f"{self.rate:g}/s × {self.fan_out} for {self.seconds:g} s: published {self.published} "
            f"({self.publish_rate:.0f}/s), pushes acked {self.pushes} of "
            f"{self.published * self.fan_out}, drained {drained} after the last publish; "
            f"CPU s sender {self.sender_cpu_s:.2f}, receivers {self.receivers_cpu_s:.2f} "
            f"over {self.wall_s:.1f} s (idle: sender {self.idle_sender_cores:.3f} cores, "
            f"receivers {self.idle_receivers_cores:.3f}); CPU-ms per push sender {sender:.3f} / receiver "
            f"{receiver:.3f} / total {total:.3f}; publish → received p50 / p95 {latency}"
        )


def fan_out(catalog: Catalog | None = None) -> list[str]:
    """The catalog's push subscriptions that a ParcelDelivered is delivered to."""
    catalog = catalog or load_catalog()
    return [
        name
        for name in catalog.matching_subscriptions(TOPIC, {"eventType": "ParcelDelivered"})
        if isinstance(catalog.subscriptions[name].delivery, PushDelivery)
    ]


def measure(
    rate: float, seconds: float, receivers: int | None = None, drain_s: float = DRAIN_S
) -> Floor:
    """Push ``rate`` ParcelDelivered messages a second for ``seconds`` to ``receivers`` no-op
    reactors (the catalog's fan-out by default), each its own process; see the module docstring."""
    catalog = load_catalog()
    catalog_subs = fan_out(catalog)
    count = receivers if receivers is not None else len(catalog_subs)
    codec = EventCodec(catalog)
    warm_up = [codec.to_message(_delivered(i), _traceparent()) for i in range(WARM_UP)]
    messages = [codec.to_message(_delivered(i), _traceparent()) for i in range(int(rate * seconds))]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        base_port = free_port_block(count + 1)
        prepare_data_dir(catalog, Settings(data_dir=data_dir, base_port=base_port))
        broker = Broker(data_dir)
        subscriptions = _wire(broker, catalog_subs, count)
        ports = dict(zip(range(base_port + 1, base_port + 1 + count), subscriptions, strict=True))
        for port, sub in ports.items():
            config = broker.get_subscription(sub)
            broker.update_subscription(replace(config, push_endpoint=_endpoint(port)))
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            processes["sender"] = _start("sender", data_dir, base_port)
            for port in ports:
                processes[f"receiver:{port}"] = _start("receiver", data_dir, port)
            _wait_healthy([base_port, *ports], processes, data_dir)
            for message in warm_up:
                broker.publish(TOPIC, [message])
            if _drain(broker, subscriptions, drain_s) is None:
                raise RuntimeError(f"the warm-up was not pushed\n{_logs(data_dir)}")
            acked_before = _acked(broker, subscriptions)
            pids = {name: p.pid for name, p in processes.items()}
            idle_before = _cpu(pids)
            time.sleep(IDLE_S)
            cpu_before, started = _cpu(pids), time.monotonic()
            idle = {k: (v - idle_before[k]) / IDLE_S for k, v in cpu_before.items()}
            sent = _publish(broker, messages, rate)
            publish_s = time.monotonic() - started
            drained = _drain(broker, subscriptions, drain_s)
            cpu_used = {k: v - cpu_before[k] for k, v in _cpu(pids).items()}
            wall_s = time.monotonic() - started
            pushes = _acked(broker, subscriptions) - acked_before
        finally:
            stop_services(list(processes.values()))
        latencies = _latencies(broker, sent, data_dir, ports)
    return Floor(
        rate=rate,
        seconds=seconds,
        fan_out=count,
        published=len(sent),
        publish_rate=len(sent) / publish_s if publish_s else 0.0,
        pushes=pushes,
        drained_s=drained,
        wall_s=wall_s,
        sender_cpu_s=cpu_used.pop("sender"),
        receivers_cpu_s=sum(cpu_used.values()),
        idle_sender_cores=idle.pop("sender"),
        idle_receivers_cores=sum(idle.values()),
        latency_ms=_p50_p95(latencies),
    )


def _wire(broker: Broker, catalog_subs: list[str], count: int) -> list[str]:
    """The ``count`` subscriptions to push to: the catalog's first ones, then copies of them
    (``eta-2``, …); the catalog's others are deleted so nothing is pushed to no one."""
    names = []
    for i in range(count):
        name = catalog_subs[i % len(catalog_subs)]
        if i >= len(catalog_subs):
            original = broker.get_subscription(name)
            name = f"{name}-{i // len(catalog_subs) + 1}"
            broker.create_subscription(replace(original, name=name))
        names.append(name)
    for name in catalog_subs[count:]:
        broker.delete_subscription(name)
    return names


def _endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}/events"


def _delivered(i: int) -> ParcelDelivered:
    """A ParcelDelivered as the event publisher makes one (ids of the same shapes and sizes)."""
    now = datetime.now(UTC)
    parcel = f"p-{os.urandom(4).hex()}"
    return ParcelDelivered(
        event_id=derive_event_id(f"parcels/{parcel}", now.isoformat()),
        occurred_at=now,
        parcel_id=parcel,
        shipment_id=f"shp-{os.urandom(6).hex()}",
        client_id=f"c-{os.urandom(4).hex()}",
        route_id=f"r-{os.urandom(3).hex()}",
        driver_id="drv-7",
        vehicle_id="veh-3",
        delivered_at=now,
        lat=12.97 + i % 25 / 100,
        lng=77.59,
        window_end=now + timedelta(hours=12),
        recipient_phone="+919812345678",
        pod_signature_ref=f"sig-{parcel}",
    )


def _traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def _publish(broker: Broker, messages: list[Message], rate: float) -> list[str]:
    """Publish one message per call at ``rate``; the message ids."""
    ids: list[str] = []
    started = time.monotonic()
    for i, message in enumerate(messages):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ids += broker.publish(TOPIC, [message])
    return ids


def _drain(broker: Broker, subscriptions: list[str], limit_s: float) -> float | None:
    """Seconds until every subscription's backlog is empty (None if not within ``limit_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if not any(broker.metrics(s).backlog for s in subscriptions):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def _acked(broker: Broker, subscriptions: list[str]) -> int:
    return sum(broker.metrics(s).acked_total for s in subscriptions)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system, all threads) each process has used so far, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def _start(role: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_HOST": "127.0.0.1",
        "MERIDIAN_LOG_LEVEL": "WARNING",
        "PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    log = (data_dir / f"{role}-{port}.log").open("ab")
    argv = [sys.executable, "-m", "loadtest.push_floor", role]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=log)


def _wait_healthy(
    ports: list[int], processes: dict[str, subprocess.Popen[bytes]], data_dir: Path
) -> None:
    deadline = time.monotonic() + START_S
    for port in ports:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                exited = [n for n, p in processes.items() if p.poll() is not None]
                if exited or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"port {port} did not answer (exited: {exited})\n{_logs(data_dir)}"
                    ) from None
                time.sleep(0.2)


def _logs(data_dir: Path) -> str:
    """The end of each process's log (the data directory goes when ``measure`` returns)."""
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
        for log in sorted(data_dir.glob("*.log"))
    )


def _latencies(
    broker: Broker, sent: list[str], data_dir: Path, ports: dict[int, str]
) -> list[float]:
    """Publish (the broker's publish time) → received (the receiver's clock), per push measured."""
    measured = set(sent)
    published = {
        str(msg_id): at
        for msg_id, at in broker.store.connection().execute("SELECT id, publish_time FROM messages")
        if str(msg_id) in measured
    }
    latencies = []
    for port in ports:
        path = data_dir / RECEIPTS.format(port=port)
        if not path.exists():
            continue
        first: dict[str, float] = {}
        for message_id, at in json.loads(path.read_text()):
            first.setdefault(message_id, at)
        latencies += [at - published[m] for m, at in first.items() if m in published]
    return latencies


def _p50_p95(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    q = statistics.quantiles(values, n=100)
    return q[49] * 1000, q[94] * 1000


# The two kinds of process ----------------------------------------------------------------------


def sender_app(settings: Settings) -> FastAPI:
    """The platform's push delivery and nothing else of the platform."""
    broker = Broker(settings.data_dir, project=settings.project)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pusher = PushDispatcher(broker, TokenIssuer(settings.data_dir))
        task = asyncio.create_task(pusher.run())
        try:
            yield
        finally:
            pusher.stop()
            await asyncio.gather(task, return_exceptions=True)

    app = FastAPI(title="push floor sender", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def receiver_app(settings: Settings, port: int) -> FastAPI:
    """A reactor's push endpoint with no handler: token, envelope, 204. It notes when each
    message arrived and writes that down when it stops (``RECEIPTS`` in the data directory)."""
    auth = RememberedTokens(push_authenticator(settings, frozenset({settings.push_identity})))
    audience = f"http://{settings.host}:{port}/events"
    received: list[tuple[str, float]] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            (settings.data_dir / RECEIPTS.format(port=port)).write_text(json.dumps(received))

    app = PlainRoutes(title="push floor receiver", lifespan=lifespan)
    install_problem_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def events(request: PlainRequest) -> PlainResponse:
        auth.check(request.headers.get("authorization"), audience)
        push = decode_envelope(request.body)
        received.append((push.message_id, time.time()))
        return PlainResponse(204)

    app.plain_route("POST", "/events", events)
    return app


def main() -> None:
    """``python -m loadtest.push_floor`` measures (PUSH_FLOOR_RATE, PUSH_FLOOR_SECONDS,
    PUSH_FLOOR_RECEIVERS) and prints the figures; ``sender`` and ``receiver`` are its children."""
    role = sys.argv[1] if len(sys.argv) > 1 else "measure"
    settings = Settings.from_env()
    port = settings.port or 0
    if role == "sender":
        serve(sender_app(settings), replace(settings, port=port), "push-floor-sender")
    elif role == "receiver":
        serve(receiver_app(settings, port), replace(settings, port=port), "push-floor-receiver")
    else:
        receivers = os.environ.get("PUSH_FLOOR_RECEIVERS")
        floor = measure(
            float(os.environ.get("PUSH_FLOOR_RATE", "200")),
            float(os.environ.get("PUSH_FLOOR_SECONDS", "10")),
            int(receivers) if receivers else None,
        )
        print(floor.summary())


if __name__ == "__main__":
    main()
