"""ParcelDelivered commit → all six reactors' effects done, at 200 deliveries/s (and lower rates).

The platform, the command path and the six reactors run as separate processes (as in
``tests/e2e/test_reactors.py``). Parcels are seeded out for delivery on routes of 25 stops, the
out-for-delivery wave is left to drain, then ``:deliver`` is called at each rate of
``REACTORS_BENCH_RATES`` (default 50, 100, 200 per second) for ``REACTORS_BENCH_SECONDS`` (10 s),
each phase on fresh parcels and drained before the next one.

The deliveries are what drivers would report, not the same point and time for every parcel: the
routes of a phase are driven side by side (a delivery on each in turn, so one route's deliveries
are 0.4 s apart at every rate), each parcel is marked delivered at its own stop, and at the time a
driver would reach it on a simulated clock that starts when the phase does (its routes all went
out before). Each leg takes the travel-time model's time (the one the ETA reactor uses) times the
route's pace (0.9 to 1.15: most drivers close to the plan, some a quarter of an hour late by the
end of the route) times the leg's own luck (0.8 to 1.2). So ETAs drift as they do on a real day,
and customers are texted when a drift passes the notification threshold. (This bench first
marked 100 parcels of one route delivered within a second at one point: every remaining ETA moved
by hours, and each delivery sent about five ETA texts, which no real route does.) The report
counts the texts and the route ETA updates per delivery, so the load each phase carried is on the
page.

Every timestamp is read back from what the system committed, so no stage is guessed:

- **commit**: the parcel document's update time (the command's transaction);
- **CloudEvent**: publish time of the change's CloudEvent on the Eventarc transport topic;
- **published**: publish time of ParcelDelivered on ``logistics.events``;
- **handler start**: ``processed_at`` of each reactor's processed-event entry (the reactor's clock
  when its handler began; billing takes it after the billing API call);
- **effect committed**: the commit time of that same entry, which each reactor writes in the
  transaction of its effect; for the client webhook also the delivery's ``delivered_at`` (the
  client endpoint answered 2xx).

Before the reactors start, the same run measures the floor the push transport alone puts under
them (``loadtest.push_floor``): the platform's push loop pushing ParcelDelivered messages at
``BASELINE_RATE`` to the catalog's fan-out of receivers that only check the token and decode the
envelope, with the CPU per push of the sender and the receivers.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from loadtest.push_floor import Floor, measure
from meridian.app.idempotency import event_ledger_path
from meridian.app.webhooks import DELIVERIES
from meridian.catalog import load_catalog
from meridian.embedded.docstore.changelog import Cursors
from meridian.embedded.docstore.stores import ServiceStores, all_stores
from meridian.embedded.eventarc import CURSORS_FILE, tailed_store, transport_name
from meridian.embedded.external.local import GreatCircleTravelTime
from meridian.embedded.pubsub.broker import DB_FILE, Broker
from meridian.ports import GeoPoint, Query
from tests.e2e.conftest import free_port_block
from tests.e2e.test_reactors import (
    MODULES,
    REACTORS,
    Client,
    _client,
    _send_out,
    start_services,
    stop_location,
    stop_services,
)

RATES = tuple(int(r) for r in os.environ.get("REACTORS_BENCH_RATES", "50,100,200").split(","))
SECONDS = int(os.environ.get("REACTORS_BENCH_SECONDS", "10"))
STOPS_PER_ROUTE = 25  # the mission's 210,000 parcels a day over 8,200 vehicles
SETTLE_S, DRAIN_S = 240, 150
TRANSPORT = transport_name("parcel-changes")
WINDOW = timedelta(hours=12)  # the promised window: a whole route fits in it at a normal pace
PACE = (0.9, 1.15)  # a route's pace against the travel-time model: most near it, some late
LUCK = (0.8, 1.2)  # one leg's own variation (traffic, parking, a customer slow to the door)
BASELINE_RATE = 200  # deliveries/s: the aim of issue #6


@dataclass(frozen=True)
class Drop:
    """One ``:deliver`` as the route's driver reports it."""

    parcel: str
    at: datetime
    position: dict[str, float]


def _drive(parcels: list[str], start: datetime, rng: random.Random) -> list[Drop]:
    """The route's deliveries in stop order, each at its stop and at the time the driver gets
    there, setting off at ``start``: the ETA reactor's own travel model, at this route's pace and
    each leg's luck."""
    travel, pace = GreatCircleTravelTime(), rng.uniform(*PACE)
    at, here = start, GeoPoint(**stop_location(0))
    drops = []
    for i, parcel in enumerate(parcels):
        there = GeoPoint(**stop_location(i))
        at += timedelta(seconds=travel.seconds(here, there, at) * pace * rng.uniform(*LUCK))
        drops.append(Drop(parcel, at, stop_location(i)))
        here = there
    return drops


def _side_by_side(routes: list[list[Drop]]) -> list[Drop]:
    """One delivery from each route in turn, as many drivers out at once report them."""
    order = []
    for i in range(max(map(len, routes), default=0)):
        order += [route[i] for route in routes if i < len(route)]
    return order


class _Ok(BaseHTTPRequestHandler):
    """The client's webhook endpoint: answers 204 to everything, over keep-alive connections as
    a client's web server would (the handler's HTTP/1.0 default closes each connection, so every
    delivery paid a TCP connect and the receiver a thread)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Phase:
    rate: int
    offered: int = 0
    accepted: dict[str, float] = field(default_factory=dict)  # parcel → 202 wall time
    achieved: float = 0.0
    drained_s: float | None = None
    stages: dict[str, list[float]] = field(default_factory=dict)
    load: Counter[str] = field(default_factory=Counter)  # texts and announcements it caused
    cpu_s: dict[str, float] = field(default_factory=dict)  # process → CPU seconds in the phase
    wall_s: float = 0.0

    def add(self, stage: str, seconds: float) -> None:
        self.stages.setdefault(stage, []).append(seconds)


def run() -> str:
    # First, on an otherwise idle machine: the reactors' processes are not started yet.
    baseline = measure(BASELINE_RATE, SECONDS)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        env = {
            **os.environ,
            "MERIDIAN_DATA_DIR": str(data_dir),
            "MERIDIAN_BASE_PORT": str(free_port_block(24)),
            "MERIDIAN_LOG_LEVEL": "WARNING",
            "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        }
        receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        runtime, processes = start_services(env, data_dir)
        try:
            client: Client = _client(runtime)
            registered = httpx.post(
                f"{runtime.url('command')}/v1/clients/{client.client_id}/webhooks",
                json={
                    "url": f"http://127.0.0.1:{receiver.server_port}/hooks",
                    "event_types": ["ParcelDelivered"],
                },
                headers={"X-API-Key": client.api_key},
                timeout=10,
            )
            registered.raise_for_status()
            webhook_id = registered.json()["webhook_id"]
            store = all_stores(data_dir)
            end = datetime.now(UTC) + WINDOW
            broker = Broker(data_dir)
            phases = [Phase(rate) for rate in RATES]
            rng = random.Random(7)
            routes: list[list[list[str]]] = []
            for phase in phases:
                routes.append(
                    [
                        _send_out(runtime, client, STOPS_PER_ROUTE, f"r-{os.urandom(3).hex()}", end)
                        for _ in range(max(1, phase.rate * SECONDS // STOPS_PER_ROUTE))
                    ]
                )
            settle_started = time.monotonic()
            settled = _drain(store, broker, SETTLE_S)
            settle_s = time.monotonic() - settle_started
            pids = dict(zip(MODULES, (p.pid for p in processes), strict=True))
            for phase, parcels in zip(phases, routes, strict=True):
                cpu_before, wall_before = _cpu(pids), time.monotonic()
                load_before = _load(store, data_dir)
                # The drivers set off now: every route of the phase went out before this.
                start = datetime.now(UTC)
                drops = _side_by_side([_drive(route, start, rng) for route in parcels])
                _deliver_at(phase, drops, runtime.url("command"), client)
                started = time.monotonic()
                if _drain(store, broker, DRAIN_S):
                    phase.drained_s = time.monotonic() - started
                phase.wall_s = time.monotonic() - wall_before
                phase.cpu_s = {k: v - cpu_before[k] for k, v in _cpu(pids).items()}
                phase.load = _load(store, data_dir) - load_before
                _measure(phase, store, data_dir, webhook_id)
        finally:
            stop_services(processes)
            receiver.shutdown()
    return _report(phases, settle_s if settled else None, baseline)


def _deliver_at(phase: Phase, drops: list[Drop], command: str, client: Client) -> None:
    """Call ``:deliver`` for each parcel at ``phase.rate`` from a bounded pool of senders: if the
    command service cannot keep up, the achieved rate says so instead of the load generator
    drowning in threads."""
    http = httpx.Client(base_url=command, timeout=30, limits=httpx.Limits(max_connections=64))
    lock = threading.Lock()

    def deliver(drop: Drop) -> None:
        body = {
            "vehicle_id": "veh-3",
            "delivered_at": drop.at.isoformat(),
            "position": drop.position,
            "pod": {"signature_ref": f"sig-{drop.parcel}"},
        }
        try:
            response = http.post(
                f"/v1/parcels/{drop.parcel}:deliver", json=body, headers=client.driver
            )
        except httpx.HTTPError:
            return
        if response.status_code == 202:
            with lock:
                phase.accepted[drop.parcel] = time.time()

    phase.offered = len(drops)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=48) as pool:
        for i, drop in enumerate(drops):
            delay = started + i / phase.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(deliver, drop)
    phase.achieved = len(phase.accepted) / (time.monotonic() - started)
    http.close()


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            used[name] = 0.0
    return used


def _drain(store: ServiceStores, broker: Broker, limit_s: float) -> bool:
    """Wait until nothing is left anywhere on the event plane: the Eventarc cursor is at the end
    of the change log, and the transport and every reactor subscription are empty."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(1)
        # Eventarc's lag: the command store's change log past the forwarder's own cursor.
        head = store.store(tailed_store(load_catalog())).changes.latest_seq()
        lag = head - (Cursors(store.data_dir / CURSORS_FILE).position(TRANSPORT) or 0)
        backlogs = [broker.metrics(s).backlog for s in (TRANSPORT, *REACTORS)]
        pending = store.query(_pending_webhooks())
        if lag < 50 and not any(backlogs) and not pending:
            return True
    return False


def _pending_webhooks() -> Any:
    return Query(DELIVERIES).where("status", "==", "pending").limit(1)


def _load(store: ServiceStores, data_dir: Path) -> Counter[str]:
    """What the deliveries so far made the reactors do beyond their own effect: texts sent by
    kind, and the ETA reactor's announcements on ``logistics.events`` by type."""
    load = Counter(f"sms {d.data['kind']}" for d in store.query(Query("notifications")))
    for _, attributes in _publish_times(data_dir, "logistics.events", "eventId").values():
        load[attributes.get("eventType", "?")] += 1
    return load


def _publish_times(data_dir: Path, topic: str, key: str) -> dict[str, tuple[float, dict[str, str]]]:
    """``attributes[key]`` → (publish time, attributes) of the latest message on ``topic``."""
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        rows = db.execute(
            "SELECT m.publish_time, m.attributes FROM messages m JOIN topics t ON t.id = m.topic_id"
            " WHERE t.name = ? ORDER BY m.id",
            (topic,),
        ).fetchall()
    finally:
        db.close()
    found: dict[str, tuple[float, dict[str, str]]] = {}
    for published, attributes in rows:
        attrs = json.loads(attributes or "{}")
        if key in attrs:
            found[attrs[key]] = (published, attrs)
    return found


def _measure(phase: Phase, store: ServiceStores, data_dir: Path, webhook_id: str) -> None:
    cloudevents = _publish_times(data_dir, TRANSPORT, "ce-document")
    published = {
        a["subject"]: (t, a)
        for t, a in _publish_times(data_dir, "logistics.events", "eventId").values()
        if a.get("eventType") == "ParcelDelivered"
    }
    for parcel, accepted in phase.accepted.items():
        document = store.get(f"parcels/{parcel}")
        if document is None or document.update_time is None:
            continue
        committed = document.update_time.timestamp()
        if f"parcels/{parcel}" in cloudevents:
            phase.add(
                "commit → CloudEvent on the Eventarc transport",
                cloudevents[f"parcels/{parcel}"][0] - committed,
            )
        if parcel not in published:
            continue
        at, attributes = published[parcel]
        phase.add("commit → ParcelDelivered on logistics.events", at - committed)
        if f"parcels/{parcel}" in cloudevents:
            phase.add(
                "CloudEvent → ParcelDelivered published", at - cloudevents[f"parcels/{parcel}"][0]
            )
        done: list[float] = []
        for consumer in REACTORS:
            entry = store.get(event_ledger_path(consumer, attributes["eventId"]))
            if entry is None or entry.update_time is None:
                continue
            started = entry.data["processed_at"].timestamp()
            effect = entry.update_time.timestamp()
            phase.add(f"{consumer}: published → handler start", started - at)
            phase.add(f"{consumer}: handler start → effect committed", effect - started)
            phase.add(f"{consumer}: 202 → effect committed", effect - accepted)
            done.append(effect)
        hook = store.get(f"{DELIVERIES}/{webhook_id}:{attributes['eventId']}")
        if hook is not None and hook.data.get("delivered_at"):
            delivered = hook.data["delivered_at"].timestamp()
            phase.add(
                "client-webhook: 202 → delivered to the client endpoint", delivered - accepted
            )
            done.append(delivered)
        else:
            done = []
        if len(done) == len(REACTORS) + 1:
            phase.add("ALL", max(done) - accepted)


def _quantiles(values: list[float]) -> tuple[str, str, str]:
    if len(values) < 2:
        return ("–", "–", "–")
    q = statistics.quantiles(values, n=100)
    return tuple(f"{q[i] * 1000:,.0f}" for i in (49, 94, 98))  # type: ignore[return-value]


def _rows(phase: Phase, labels: Iterable[str]) -> list[str]:
    out = []
    for label in labels:
        values = phase.stages.get(label, [])
        p50, p95, p99 = _quantiles(values)
        out.append(f"| {label} | {p50} | {p95} | {p99} | {len(values)} |")
    return out


def _report(phases: list[Phase], settle_s: float | None, baseline: Floor) -> str:
    lines = [
        "## Reactors: ParcelDelivered commit → effects done",
        "",
        f"The platform (push, Eventarc), the command service, the event publisher and the "
        f"{len(REACTORS)} reactors run as separate processes on the same 2 cores as the load "
        f"generator. Parcels go out on routes of {STOPS_PER_ROUTE} stops; the out-for-delivery wave "
        + (
            f"drained in {settle_s:.0f} s"
            if settle_s is not None
            else f"had NOT drained after {SETTLE_S} s"
        )
        + f" before measuring. Each phase calls `:deliver` at its rate for {SECONDS} s on fresh parcels and "
        "is drained before the next one. Times are read back from commits (see the module docstring): "
        "per-stage rows explain where the end-to-end time goes.",
        "",
        "| rate offered | accepted | achieved/s | drained after | all six effects p50 / p95 / p99 ms |",
        "|---:|---:|---:|---|---|",
    ]
    for phase in phases:
        drained = (
            f"{phase.drained_s:.0f} s" if phase.drained_s is not None else f"not in {DRAIN_S} s"
        )
        p50, p95, p99 = _quantiles(phase.stages.get("ALL", []))
        lines.append(
            f"| {phase.rate}/s | {len(phase.accepted)} of {phase.offered} | {phase.achieved:.0f} | {drained} "
            f"| {p50} / {p95} / {p99} ({len(phase.stages.get('ALL', []))} parcels) |"
        )
    for phase in phases:
        lines += [
            "",
            f"### {phase.rate} deliveries/s offered ({phase.achieved:.0f}/s achieved)",
            "",
            "| stage | p50 ms | p95 ms | p99 ms | parcels |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += _rows(
            phase,
            [
                "commit → CloudEvent on the Eventarc transport",
                "CloudEvent → ParcelDelivered published",
                "commit → ParcelDelivered on logistics.events",
            ],
        )
        for consumer in REACTORS:
            lines += _rows(
                phase,
                [
                    f"{consumer}: published → handler start",
                    f"{consumer}: handler start → effect committed",
                    f"{consumer}: 202 → effect committed",
                ],
            )
        lines += _rows(phase, ["client-webhook: 202 → delivered to the client endpoint"])
        everything = phase.stages.get("ALL", [])
        lines.append(
            f"| **202 → all six effects and the webhook delivered** "
            f"| {' | '.join(_quantiles(everything))} | {len(everything)} |"
        )
        busiest = sorted(phase.cpu_s.items(), key=lambda kv: -kv[1])
        lines += [
            "",
            f"CPU seconds per process over the phase ({phase.wall_s:.0f} s of sending and draining; "
            f"{sum(phase.cpu_s.values()):.0f} s in all, of {2 * phase.wall_s:.0f} s on 2 cores): "
            + ", ".join(f"{name} {seconds:.1f}" for name, seconds in busiest)
            + ".",
        ]
        delivered = max(1, len(phase.accepted))
        lines += [
            "",
            "What the deliveries set off, per delivery: "
            + ", ".join(
                f"{kind} {count / delivered:.2f}" for kind, count in sorted(phase.load.items())
            )
            + ".",
        ]
    lines += _baseline(baseline)
    lines += ["", "Aim: p95 ≤ 250 ms for all six effects at 200 deliveries/s."]
    return "\n".join(lines)


def _baseline(floor: Floor) -> list[str]:
    """The push transport's own CPU, measured before the phases (``loadtest.push_floor``)."""
    sender, receiver, total = floor.ms_per_push()
    cores = total * floor.fan_out * BASELINE_RATE / 1000
    drained = (
        f"drained {floor.drained_s:.1f} s after the last publish"
        if floor.drained_s is not None
        else "NOT drained"
    )
    latency = (
        f"{floor.latency_ms[0]:.0f} / {floor.latency_ms[1]:.0f} ms" if floor.latency_ms else "–"
    )
    return [
        "",
        "### Baseline: the push transport alone",
        "",
        f"Measured in the same run, before the reactors start: the platform's push loop (its own "
        f"process) pushes {floor.published} ParcelDelivered messages, {floor.rate:g}/s for "
        f"{floor.seconds:g} s ({floor.publish_rate:.0f}/s achieved), to {floor.fan_out} "
        "receivers (one per push subscription a ParcelDelivered goes to in the catalog), each its "
        "own uvicorn process with a reactor's `/events` endpoint that only checks the OIDC token, "
        "decodes the envelope and answers 204. "
        f"{floor.pushes} pushes acked of {floor.published * floor.fan_out}, {drained}; "
        f"publish → received p50 / p95 {latency}.",
        "",
        "| CPU-ms | sender | receiver | total |",
        "|---|---:|---:|---:|",
        f"| per push | {sender:.3f} | {receiver:.3f} | {total:.3f} |",
        f"| per delivery (× {floor.fan_out} pushes) | {sender * floor.fan_out:.2f} "
        f"| {receiver * floor.fan_out:.2f} | {total * floor.fan_out:.2f} |",
        "",
        f"At {BASELINE_RATE} deliveries/s that is {cores:.2f} cores, {cores / 2:.0%} of the 2 "
        f"cores, before any reactor does any work. With nothing to push, the sender's loops "
        f"used {floor.idle_sender_cores:.3f} cores and the receivers "
        f"{floor.idle_receivers_cores:.3f} (not in the figures per push, which do include the "
        "loops' waits between messages).",
    ]
