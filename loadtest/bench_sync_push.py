"""The migration bridge's push direction (#21 item 5): Meridian's parcel facts applied into a real
PostgreSQL by the legacy writer (``services/sync/writer``), in events/s, beside a floor measured
in the same run on the same server:

- **floor**: the same row updates and processed-event rows written with plain psycopg
  ``executemany`` in one transaction (no rules, no per-event savepoint, no HTTP);
- **handler, one event per transaction** (``write_back``): what a reactor without batching pays,
  a commit per event;
- **handler, batches of 64** (``write_back_batch``): one commit per batch, a savepoint per event;
- **push endpoint over HTTP**: the writer's app served by uvicorn on loopback, ``CLIENTS``
  concurrent pushers each posting Pub/Sub envelopes with OIDC tokens, as the platform's push
  dispatcher does; the endpoint batches what arrives together.

Every event is a ``ParcelAssigned`` of a parcel of its own (a real update: status, driver,
vehicle). ``bench_push(dsn, events)`` runs on a database the caller provides with
``legacy/schema.sql`` applied (``loadtest.bench_sync.legacy_database`` starts one);
``MERIDIAN_BENCH_PUSH_EVENTS`` (default 4,000 per phase) sets the scale when run as a module.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Legacy, Settings
from meridian.domain import events as ev
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.push import envelope
from meridian.ports import ReceivedMessage
from services.sync.writer.app import create_app
from services.sync.writer.handlers import Deps, write_back, write_back_batch
from services.sync.writer.postgres import PostgresTables

BATCH = 64
CLIENTS = 16
PHASES = ("floor", "one per transaction", "batches of 64", "push endpoint over HTTP")


@dataclass(frozen=True)
class PushRates:
    events: int
    per_s: dict[str, float]  # phase -> events/s

    def markdown(self) -> str:
        floor = self.per_s["floor"]
        lines = [
            f"Push direction: {self.events:,} `ParcelAssigned` per phase into PostgreSQL "
            "(`loadtest/bench_sync_push.py`)",
            "",
            "| path | events/s | of the floor |",
            "|---|---:|---:|",
        ]
        for phase in PHASES:
            rate = self.per_s[phase]
            lines.append(f"| {phase} | {rate:,.0f} | {rate / floor:.1%} |")
        return "\n".join(lines)


def bench_push(dsn: str, events: int) -> PushRates:
    """Events/s of each phase, ``events`` parcels each, on the database ``dsn`` names."""
    _seed(dsn, events * len(PHASES))
    parcels = iter(range(events * len(PHASES)))
    batches = [[f"p-{next(parcels)}" for _ in range(events)] for _ in PHASES]
    with tempfile.TemporaryDirectory(prefix="bench-push-") as data_dir:
        settings = Settings(data_dir=Path(data_dir), legacy=Legacy(dsn))
        rates = {
            "floor": _floor(dsn, batches[0]),
            "one per transaction": _in_process(settings, batches[1], batch=1),
            "batches of 64": _in_process(settings, batches[2], batch=BATCH),
            "push endpoint over HTTP": _over_http(settings, batches[3]),
        }
    _check_applied(dsn, [p for batch in batches for p in batch])
    return PushRates(events, rates)


def _assigned(parcel_id: str) -> ev.ParcelAssigned:
    return ev.ParcelAssigned(
        event_id=f"assigned-{parcel_id}",
        occurred_at=datetime.now(UTC) + timedelta(minutes=1),
        parcel_id=parcel_id,
        shipment_id="s-1",
        client_id="c-1",
        route_id="r-1",
        driver_id="d-1",
        vehicle_id="v-1",
    )


def _seed(dsn: str, parcels: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO clients (id, name) VALUES ('c-1', 'Acme')")
        conn.execute("INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1')")
        conn.execute(
            "INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, "
            "weight_kg, stop_address, stop_lat, stop_lng, window_start, window_end) "
            "SELECT 'p-' || n, 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, n || ' MG Road', "
            "12.97, 77.6, now(), now() + interval '3 hours' FROM generate_series(0, %s) AS n",
            (parcels - 1,),
        )
        # The pull has read them: the writer marks its rows as the bridge's (the usual case).
        conn.execute(
            "INSERT INTO bridge_cursors (entity, updated_at, id) "
            "SELECT 'parcels', max(updated_at), 'p-~' FROM parcels"
        )
        conn.execute("VACUUM ANALYZE parcels")


def _timed(work: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def _floor(dsn: str, parcel_ids: Sequence[str]) -> float:
    events = [_assigned(p) for p in parcel_ids]

    def write() -> None:
        with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO bridge_processed_events (event_id, event_type, subject, occurred_at) "
                "VALUES (%s, %s, %s, %s)",
                [(e.event_id, e.event_type, e.parcel_id, e.occurred_at) for e in events],
            )
            cursor.executemany(
                "UPDATE parcels SET status = 'ASSIGNED', driver_id = %s, vehicle_id = %s "
                "WHERE id = %s",
                [(e.driver_id, e.vehicle_id, e.parcel_id) for e in events],
            )

    return _timed(write, len(events))


def _in_process(settings: Settings, parcel_ids: Sequence[str], batch: int) -> float:
    events = [_assigned(p) for p in parcel_ids]
    tables = PostgresTables(settings, size=1)
    deps = Deps(tables, adapters.document_store(settings, service="legacy-writer"))

    def apply() -> None:
        for start in range(0, len(events), batch):
            chunk = events[start : start + batch]
            if batch == 1:
                write_back(chunk[0], deps)
            else:
                outcomes = write_back_batch(chunk, deps)
                assert all(o == "updated" for o in outcomes), outcomes

    try:
        return _timed(apply, len(events))
    finally:
        tables.close()


def _over_http(settings: Settings, parcel_ids: Sequence[str]) -> float:
    import uvicorn

    port = _free_port()
    settings = Settings(
        data_dir=settings.data_dir,
        legacy=settings.legacy,
        port_overrides={"legacy-writer": port},
    )
    issuer = TokenIssuer(settings.data_dir)
    codec = EventCodec(load_catalog())
    url = f"{settings.url_of('legacy-writer')}/events"
    token = issuer.token(url, settings.push_identity)
    bodies = [
        json.dumps(
            envelope(
                ReceivedMessage("a", p, codec.to_message(_assigned(p)), datetime.now(UTC), 1),
                "legacy-writer",
                settings.project,
                True,
            )
        )
        for p in parcel_ids
    ]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def pusher(share: Sequence[str]) -> None:
        with httpx.Client(timeout=30) as client:
            for body in share:
                answer = client.post(url, content=body, headers=headers)
                assert answer.status_code == 204, answer.text

    shares = [bodies[i::CLIENTS] for i in range(CLIENTS)]
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            return _timed(lambda: list(pool.map(pusher, shares)), len(bodies))
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _check_applied(dsn: str, parcel_ids: Sequence[str]) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM parcels WHERE status = 'ASSIGNED' AND id = ANY(%s)",
            (list(parcel_ids),),
        ).fetchone()
    assert row is not None and row[0] == len(parcel_ids), f"{row} of {len(parcel_ids)} applied"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run() -> str:
    from loadtest.bench_sync import legacy_database

    events = int(os.environ.get("MERIDIAN_BENCH_PUSH_EVENTS", "4000"))
    with legacy_database() as dsn:
        return bench_push(dsn, events).markdown()


if __name__ == "__main__":
    print(run())
