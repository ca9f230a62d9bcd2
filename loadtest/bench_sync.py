"""The migration bridge (#21) over a real PostgreSQL (Debian's, started in a temporary directory as
the tests start it) and the embedded document store:

1. **Backfill** rows/s (``services.sync.backfill``: every shipment with its parcels, through the
   sync jobs' apply path) beside PostgreSQL's own ``COPY`` of the same rows (``COPY parcels TO
   STDOUT`` streamed into ``COPY parcels_copy FROM STDIN``, same process, same run): the ratio is
   the figure to compare across machines.
2. **Steady-state lag** at the reference operator's rate of change: 210,000 parcels a day, 35% of
   them created in a three-hour morning peak, each changed twice in the monolith (created, then
   edited), so the peak is 210,000 x 0.35 / 10,800 s x 2 = 13.6 row changes/s. A writer drives new
   shipments (3 parcels each) and edits into the monolith at that rate while the minute sync runs:
   the pull (``services.sync.pull.run_pull``) then every request applied (``apply_request``), in
   process. The cycle is shortened for the bench (``CYCLE_S``, 10 s instead of 60) so a bounded run
   holds several; the workflow's process starts per job are not in it. Lag per row: from its
   ``updated_at`` in the monolith to its document's write in Meridian (the link's two stamps).
3. The push direction's events/s into PostgreSQL is measured by ``loadtest/bench_sync_push.py``.

Scale: ``MERIDIAN_BENCH_SYNC_PARCELS`` (default 60,000) and ``MERIDIAN_BENCH_SYNC_SECONDS``
(default 90), read here as bench parameters (not service settings). ``make bench`` keeps it to
about two minutes.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import SyncRequested
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Message, Publisher, Query
from services.sync.apply import apply_request
from services.sync.backfill import backfill
from services.sync.entities import LINKS, entity
from services.sync.pull import pull_entity

PARCELS_PER_SHIPMENT = 3
DAY_PARCELS = 210_000
PEAK_SHARE, PEAK_S, CHANGES_PER_PARCEL = 0.35, 3 * 3600, 2
PEAK_CHANGES_PER_S = DAY_PARCELS * PEAK_SHARE / PEAK_S * CHANGES_PER_PARCEL
CYCLE_S = 10.0


DEFAULT_PARCELS, DEFAULT_SECONDS = 60_000, 90.0


def _scale() -> tuple[int, float]:
    return (
        int(os.environ.get("MERIDIAN_BENCH_SYNC_PARCELS", DEFAULT_PARCELS)),
        float(os.environ.get("MERIDIAN_BENCH_SYNC_SECONDS", DEFAULT_SECONDS)),
    )


@contextlib.contextmanager
def legacy_database() -> Iterator[str]:
    """A PostgreSQL server in a temporary directory with legacy/schema.sql applied; its DSN."""
    from tests.legacy_db import SCHEMA, postgres_server

    options = "-c shared_buffers=128MB -c max_connections=20"
    with postgres_server("meridian-bench-pg-", options) as server:
        dsn = f"host=127.0.0.1 port={server.port} dbname=postgres user=postgres"
        deadline = time.monotonic() + 60
        while True:  # pg_ctl -w returns as the server starts accepting, not always after
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("CREATE DATABASE legacy")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        dsn = f"host=127.0.0.1 port={server.port} dbname=legacy user=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA.read_text())
        yield dsn


def _seed(conn: psycopg.Connection[dict[str, object]], parcels: int) -> None:
    shipments = max(1, parcels // PARCELS_PER_SHIPMENT)
    conn.execute("INSERT INTO clients (id, name) VALUES ('c-1', 'Acme')")
    conn.execute(
        "INSERT INTO shipments (id, client_id) SELECT 's-' || lpad(n::text, 8, '0'), 'c-1'"
        " FROM generate_series(1, %s) AS n",
        (shipments,),
    )
    conn.execute(
        "INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone,"
        " weight_kg, stop_address, stop_lat, stop_lng, window_start, window_end)"
        " SELECT 'p-' || lpad(n::text, 9, '0'), 's-' || lpad((1 + n %% %s)::text, 8, '0'),"
        " 'c-1', 'Ravi', '+919800000001', 1.5, n || ' MG Road', 12.97, 77.6,"
        " '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30' FROM generate_series(1, %s) AS n",
        (shipments, parcels),
    )


def _copy_rows_per_s(dsn: str) -> tuple[int, float]:
    """PostgreSQL's COPY of the shipments and parcels into copies of their tables, streamed from
    one connection into another (one connection carries one COPY at a time)."""
    rows = 0
    with psycopg.connect(dsn, autocommit=True) as reader, psycopg.connect(dsn) as writer:
        for table in ("shipments", "parcels"):
            writer.execute(f"CREATE TABLE {table}_copy (LIKE {table} INCLUDING DEFAULTS)")
        writer.commit()
        started = time.perf_counter()
        for table in ("shipments", "parcels"):
            with (
                reader.cursor() as out,
                writer.cursor() as into,
                out.copy(f"COPY {table} TO STDOUT") as source,
                into.copy(f"COPY {table}_copy FROM STDIN") as sink,
            ):
                for chunk in source:
                    sink.write(chunk)
            writer.commit()
        elapsed = time.perf_counter() - started
        for table in ("shipments", "parcels"):
            found = writer.execute(f"SELECT count(*) FROM {table}_copy").fetchone()
            rows += int(found[0]) if found else 0
    return rows, rows / elapsed


class _Requests(Publisher):
    """The pull's SyncRequested events, kept for the apply (the bench's sync.requests)."""

    def __init__(self, codec: EventCodec) -> None:
        self.codec, self.pending = codec, list[SyncRequested]()

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        for message in messages:
            event = self.codec.from_message(message.data, message.attributes)
            assert isinstance(event, SyncRequested)
            self.pending.append(event)
        return [str(len(self.pending))] * len(messages)


def _drive(dsn: str, seconds: float, stop: threading.Event) -> int:
    """New shipments and edits into the monolith at the peak rate; the changes made."""
    interval = 1.0 / PEAK_CHANGES_PER_S
    made, n = 0, 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < seconds:
            n += 1
            if n % 2:  # a new parcel (a new shipment every PARCELS_PER_SHIPMENT of them)
                shipment = f"live-s-{n // (2 * PARCELS_PER_SHIPMENT)}"
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO shipments (id, client_id) VALUES (%s, 'c-1')"
                        " ON CONFLICT DO NOTHING",
                        (shipment,),
                    )
                    conn.execute(
                        "INSERT INTO parcels (id, shipment_id, client_id, recipient_name,"
                        " recipient_phone, weight_kg, stop_address, stop_lat, stop_lng,"
                        " window_start, window_end) VALUES (%s, %s, 'c-1', 'Ravi',"
                        " '+919800000001', 1.5, 'MG Road', 12.97, 77.6, now(),"
                        " now() + interval '3 hours')",
                        (f"live-p-{n}", shipment),
                    )
            else:  # an edit of the parcel made just before
                conn.execute(
                    "UPDATE parcels SET stop_address = 'MG Road, gate 2' WHERE id = %s",
                    (f"live-p-{n - 1}",),
                )
            made += 1
            time.sleep(max(0.0, started + n * interval - time.monotonic()))
    return made


def _sync_cycles(dsn: str, store: EmbeddedDocumentStore, stop: threading.Event) -> int:
    """The minute sync, every CYCLE_S: pull, then apply each request. Cycles run."""
    codec = EventCodec(load_catalog())
    requests = _Requests(codec)
    cycles = 0
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        while True:
            began = time.monotonic()
            for name in ("shipments", "parcels"):
                pull_entity(conn, entity(name), requests, codec, 500)
            while requests.pending:
                request = requests.pending.pop(0)
                target = entity(request.entity)
                apply_request(
                    store, conn, target, request, target.job, 500, lambda: datetime.now(UTC)
                )
            cycles += 1
            if stop.is_set():
                return cycles
            stop.wait(max(0.0, CYCLE_S - (time.monotonic() - began)))


def _lags(store: EmbeddedDocumentStore) -> list[float]:
    return [
        (link.data["meridian_updated_at"] - link.data["legacy_updated_at"]).total_seconds()
        for link in store.query(Query(LINKS).where("entity", "==", "parcels"))
        if str(link.data["id"]).startswith("live-p-")
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run() -> str:
    parcels, seconds = _scale()
    with legacy_database() as dsn, tempfile.TemporaryDirectory() as data_dir:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            _seed(conn, parcels)
            copied, copy_rate = _copy_rows_per_s(dsn)
            store = EmbeddedDocumentStore(Path(data_dir))
            started = time.perf_counter()
            moved = backfill(store, conn, ["clients", "shipments", "parcels"], batch=1000)
            elapsed = time.perf_counter() - started
        backfilled = sum(m.outcome.created for m in moved.values())
        rate = backfilled / elapsed

        stop = threading.Event()
        cycles: list[int] = []
        syncer = threading.Thread(
            target=lambda: cycles.append(_sync_cycles(dsn, store, stop)), daemon=True
        )
        syncer.start()
        changes = _drive(dsn, seconds, stop)
        time.sleep(CYCLE_S)  # the last changes' cycle
        stop.set()
        syncer.join(120)
        lags = _lags(store)

    backfill_rate = f"{rate:,.0f} rows/s ({backfilled:,} records in {elapsed:.1f} s)"
    p50, p95 = _percentile(lags, 0.5), _percentile(lags, 0.95)
    mean = statistics.fmean(lags) if lags else float("nan")
    lag = f"{len(lags):,}: {p50:.1f} s / {p95:.1f} s / {max(lags, default=float('nan')):.1f} s"
    return f"""## Migration bridge: backfill and steady-state lag (PostgreSQL {_pg_version()})

| measure | value |
|---|---|
| rows in the monolith | {parcels:,} parcels in {copied - parcels:,} shipments |
| PostgreSQL `COPY` (out and back in, same rows) | {copy_rate:,.0f} rows/s |
| `meridian sync backfill` (shipments with their parcels, into the embedded store) | {backfill_rate} |
| **backfill / COPY** | **{rate / copy_rate:.3f}** |
| changes driven at the peak rate ({PEAK_CHANGES_PER_S:.1f}/s) for {seconds:.0f} s | {changes:,} |
| sync cycles (every {CYCLE_S:.0f} s; 60 s in production) | {cycles[0] if cycles else 0} |
| parcels synced, lag p50 / p95 / max | {lag} |

The peak rate is 210,000 parcels a day, 35% in a three-hour morning peak, two changes each. Lag is
from the row's `updated_at` in the monolith to its document's write in Meridian; with a cycle of
C seconds it is about C/2 on average plus the pull and apply time, so in production (C = 60 s)
add about 25 s to the p50 and 50 s to the p95. Mean lag {mean:.1f} s.{_scale_note(parcels, seconds)}"""


def _scale_note(parcels: int, seconds: float) -> str:
    if (parcels, seconds) >= (DEFAULT_PARCELS, DEFAULT_SECONDS):
        return ""
    return (
        f"\n\n_A tiny-scale run ({parcels:,} parcels, {seconds:g} s) that proves the harness; the "
        "reference figures come from `make bench` at the default scale on a quiet machine._"
    )


def _pg_version() -> str:
    from tests.legacy_db import pg_ctl

    return Path(pg_ctl()).parent.parent.name
