"""The whole platform as ``meridian up`` starts it, for the tests and the benchmark that load it.

``whole_platform`` starts every process of ``runnable_services`` through the supervisor
``meridian up`` uses (``only`` picks some, as ``meridian up --services`` does, without the
platform process unless named); ``send_out`` puts parcels out for delivery through the command
service's API; ``deliver_open_loop`` calls ``:deliver`` at a fixed rate the way a driver app does
under load: each request at its planned time whatever the earlier ones do, timed from then, and
a ``503`` answered with ``Retry-After`` sent again after that delay (a connection that fails
likewise, after a second), so every delivery is accepted in the end unless it is refused outright.
``backlogs`` reads what ``meridian status`` shows: each subscription's backlog and oldest unacked
age, and how far each Eventarc trigger is behind its change log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

from meridian.catalog import load_catalog
from meridian.config import Legacy, Settings
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.runtime.platform import prepare_data_dir
from meridian.runtime.status_cli import EmbeddedVitalSigns, Thresholds
from meridian.runtime.supervisor import Supervisor, runnable_services
from meridian.wire.http1 import ResponseParser, post_start, request_head
from tests.e2e.conftest import Runtime, free_port_block
from tests.e2e.test_reactors import Client, _client

STOPS_PER_ROUTE = 25


@dataclass
class WholePlatform:
    """The running processes: ``url(service)``, ``pids()``, and a client to act as."""

    settings: Settings
    supervisor: Supervisor

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def url(self, service: str) -> str:
        return self.settings.url_of(service)

    def pids(self) -> dict[str, int]:
        return self.supervisor.pids()

    def client(self) -> Client:
        """A newly registered client (with a billing tariff), as the e2e tests register one."""
        runtime = Runtime(None, self.data_dir, self.settings.base_port)  # type: ignore[arg-type]
        return _client(runtime)

    def driver_headers(self, driver: str) -> dict[str, str]:
        token = LocalIdentityIssuer(self.data_dir).token(driver, "driver")
        return {"Authorization": f"Bearer {token}"}


@contextmanager
def whole_platform(
    data_dir: Path,
    only: Collection[str] | None = None,
    env: Mapping[str, str] | None = None,
    start_timeout_s: float = 240,
) -> Iterator[WholePlatform]:
    """``meridian up`` in ``data_dir`` on free loopback ports; ``env`` is added to every child's
    environment. Every child is stopped on the way out."""
    settings = Settings(
        data_dir=data_dir,
        base_port=free_port_block(24),
        # as meridian up, which runs the migration bridge only with a monolith to sync
        legacy=Legacy(dsn=(env or {}).get("MERIDIAN_LEGACY_DSN", "")),
    )
    extra = {"MERIDIAN_LOG_LEVEL": "WARNING", **(env or {})}
    processes = [
        dataclasses.replace(p, env={**extra, **p.env})
        for p in runnable_services(load_catalog(), settings)
        if only is None or p.name in only
    ]
    prepare_data_dir(load_catalog(), settings)
    supervisor = Supervisor(settings, processes, data_dir / "logs")
    try:
        supervisor.start()
        supervisor.wait_healthy(timeout_s=start_timeout_s)
        yield WholePlatform(settings, supervisor)
    finally:
        supervisor.stop()


def send_out(
    platform: WholePlatform,
    client: Client,
    count: int,
    driver: str,
    vehicles: Sequence[str] = ("veh-3",),
    threads: int = 8,
) -> list[str]:
    """``count`` parcels of one shipment assigned to ``driver`` on routes of 25 stops (stop ``i``
    on vehicle ``vehicles[i % len(vehicles)]``) and sent out for delivery, in parallel."""
    suffix = os.urandom(3).hex()
    parcels = [f"p-{suffix}-{i}" for i in range(count)]
    now = datetime.now(UTC)
    window = {"start": now.isoformat(), "end": (now + timedelta(hours=12)).isoformat()}
    stops = [
        {
            "parcel_id": p,
            "recipient": {"name": "Asha", "phone": "+919812345678"},
            "stop": {"location": {"lat": 12.97 + (i % 25) / 100, "lng": 77.59}, "address": "MG Road", "window": window},
            "weight_kg": 1.5,
        }
        for i, p in enumerate(parcels)
    ]  # fmt: skip
    driver_headers = platform.driver_headers(driver)
    with httpx.Client(base_url=platform.url("command"), timeout=60) as http:
        for start in range(0, count, 500):
            created = http.post(
                "/v1/shipments",
                json={"parcels": stops[start : start + 500]},
                headers={"X-API-Key": client.api_key},
            )
            assert created.status_code == 202, created.text

        def route(first: int) -> None:
            route_id = f"r-{suffix}-{first // STOPS_PER_ROUTE}"
            for i in range(first, min(count, first + STOPS_PER_ROUTE)):
                vehicle = vehicles[i % len(vehicles)]
                assign = {
                    "route_id": route_id,
                    "driver_id": driver,
                    "vehicle_id": vehicle,
                    "stop_sequence": i - first,
                }
                moved = http.post(
                    f"/v1/parcels/{parcels[i]}:assign", json=assign, headers=client.dispatcher
                )
                assert moved.status_code == 202, moved.text
                out = {"vehicle_id": vehicle, "at": now.isoformat()}
                moved = http.post(
                    f"/v1/parcels/{parcels[i]}:out-for-delivery", json=out, headers=driver_headers
                )
                assert moved.status_code == 202, moved.text

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(route, range(0, count, STOPS_PER_ROUTE)))
    return parcels


@dataclass
class Delivered:
    """What ``deliver_open_loop`` saw: per accepted parcel, seconds from its planned send to the
    202 (retries included); the 503s it was answered (and retried after Retry-After), the
    connections that failed (retried after a second), and any other answer (not retried)."""

    latency_s: dict[str, float] = field(default_factory=dict)
    shed: int = 0
    failed_connections: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    retry_after_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def quantile_ms(self, q: float) -> float:
        values = sorted(self.latency_s.values())
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def deliver_open_loop(
    command_url: str,
    parcels: Sequence[str],
    headers: Mapping[str, str],
    rate: float,
    vehicle: str = "veh-3",
    connections: int = 64,
    give_up_s: float = 300,
) -> Delivered:
    """``:deliver`` each parcel at ``rate`` per second (open loop; see the module docstring) over
    up to ``connections`` keep-alive connections; returns when every parcel has its answer."""
    outcome = Delivered()
    queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    left = len(parcels)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + len(parcels) / rate + give_up_s
    base = {"content-type": "application/json", **{k.lower(): v for k, v in headers.items()}}

    def finish() -> None:
        nonlocal left
        left -= 1
        if left == 0:
            done.set()

    def again(planned: float, parcel: str, after_s: float) -> None:
        if time.perf_counter() + after_s > deadline:
            outcome.refused["gave up"] += 1
            finish()
        else:
            loop.call_later(after_s, queue.put_nowait, (planned, parcel))

    def request(parcel: str) -> tuple[tuple[str, int], bytes]:
        body = json.dumps(
            {
                "vehicle_id": vehicle,
                "delivered_at": datetime.now(UTC).isoformat(),
                "position": {"lat": 12.97, "lng": 77.59},
                "pod": {"signature_ref": f"sig-{parcel}"},
            }
        ).encode()
        route = post_start(f"{command_url}/v1/parcels/{parcel}:deliver")
        assert route is not None
        key, start = route
        head = request_head(start, {**base, "idempotency-key": f"deliver-{parcel}"}, len(body))
        return key, head + body

    async def sender() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while True:
            planned, parcel = await queue.get()
            key, message = request(parcel)
            try:
                async with asyncio.timeout(30):
                    if connection is None:
                        connection = await asyncio.open_connection(*key)
                    reader, writer = connection
                    writer.write(message)
                    parser = ResponseParser(64 * 1024)
                    while (answer := parser.feed(await reader.read(64 * 1024))) is None:
                        pass
                reply, reusable = answer
                if not reusable:
                    writer.close()
                    connection = None
            except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError):
                if connection is not None:
                    connection[1].close()
                connection = None
                outcome.failed_connections += 1
                again(planned, parcel, 1.0)
                continue
            if 200 <= reply.status < 300:
                outcome.latency_s[parcel] = time.perf_counter() - planned
                finish()
            elif reply.status == 503:
                outcome.shed += 1
                wait = float(reply.headers.get("retry-after", "1") or 1)
                outcome.retry_after_s.append(wait)
                again(planned, parcel, wait)
            else:
                outcome.refused[f"{reply.status} {reply.body[:120]!r}"] += 1
                finish()

    senders = [asyncio.create_task(sender()) for _ in range(connections)]
    started = time.perf_counter()
    try:
        for i, parcel in enumerate(parcels):
            planned = started + i / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((planned, parcel))
        if parcels:
            await done.wait()
    finally:
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
    outcome.elapsed_s = time.perf_counter() - started
    return outcome


@dataclass(frozen=True)
class Backlogs:
    """One reading of the vital signs ``meridian status`` shows."""

    at: float  # time.monotonic()
    backlog: dict[str, int]  # per subscription
    oldest_unacked_s: dict[str, float]  # per subscription
    eventarc_lag: dict[str, int]  # per trigger: changes not yet sent as CloudEvents


def backlogs(settings: Settings) -> Backlogs:
    status = EmbeddedVitalSigns(settings, load_catalog(), Thresholds.load()).read()
    return Backlogs(
        time.monotonic(),
        {s.subscription: s.backlog for s in status.subscriptions},
        {s.subscription: s.oldest_unacked_age_s for s in status.subscriptions},
        {t.trigger: t.lag_changes for t in status.eventarc},
    )


def document(platform: WholePlatform, path: str) -> dict[str, Any] | None:
    """The document at ``path`` as its owning service's store holds it."""
    store = all_stores(platform.data_dir)
    try:
        found = store.get(path)
    finally:
        store.close()
    return dict(found.data) if found is not None else None


def drained(reading: Backlogs, subscriptions: Collection[str]) -> bool:
    return not any(reading.eventarc_lag.values()) and not any(
        reading.backlog.get(s, 0) for s in subscriptions
    )


def wait_drained(
    settings: Settings, subscriptions: Collection[str], limit_s: float
) -> tuple[bool, list[Backlogs]]:
    """Read the backlogs every half second until the triggers and ``subscriptions`` are empty
    (True) or ``limit_s`` has passed (False); returns the readings too."""
    deadline = time.monotonic() + limit_s
    readings = [backlogs(settings)]
    while not drained(readings[-1], subscriptions):
        if time.monotonic() > deadline:
            return False, readings
        time.sleep(0.5)
        readings.append(backlogs(settings))
    return True, readings


class WebhookReceiver(BaseHTTPRequestHandler):
    """A client's webhook endpoint that answers 204 and keeps each delivery: (webhook-id,
    event type, parcel id). Kept per server: ``serve_webhooks`` makes a subclass."""

    protocol_version = "HTTP/1.1"
    received: ClassVar[list[tuple[str, str, str]]]
    lock: ClassVar[threading.Lock]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.lock:
            self.received.append(
                (
                    self.headers["webhook-id"],
                    str(body.get("type", "")),
                    str(body.get("data", {}).get("parcel_id", "")),
                )
            )
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve_webhooks(platform: WholePlatform, client: Client) -> Iterator[list[tuple[str, str, str]]]:
    """A webhook endpoint on loopback registered for ``client``'s ParcelDelivered; yields the
    list its deliveries are appended to. (The platform must allow 127.0.0.0/8 webhooks.)"""
    received: list[tuple[str, str, str]] = []
    handler = type("Receiver", (WebhookReceiver,), {"received": received, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        registered = httpx.post(
            f"{platform.url('command')}/v1/clients/{client.client_id}/webhooks",
            json={
                "url": f"http://127.0.0.1:{server.server_port}/hooks",
                "event_types": ["ParcelDelivered"],
            },
            headers={"X-API-Key": client.api_key},
            timeout=30,
        )
        assert registered.status_code == 201, registered.text
        yield received
    finally:
        server.shutdown()
        server.server_close()
