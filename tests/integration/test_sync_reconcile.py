"""Reconciliation over a real PostgreSQL and the embedded document store: green after a sync; a row
tampered with in the monolith after the sync (its trigger bypassed, so nothing marks it changed)
makes the job exit non-zero naming the row, the field and both values; a change within the
in-flight window is not a difference, and the same change past it is; records missing on either
side are named; the report is saved where ``meridian sync status`` reads it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Legacy, Settings
from meridian.domain.events import SyncOrigin, SyncRequested
from meridian.embedded.docstore import EmbeddedDocumentStore
from services.sync.apply import apply_request
from services.sync.entities import CLIENTS, ENTITIES, PARCELS, Entity
from services.sync.envelope import encode_argument
from services.sync.legacy import Connection
from services.sync.reconcile import (
    Kind,
    Reconciler,
    latest_report,
    save_report,
    sync_reconcile,
)

SEED = """
INSERT INTO clients (id, name) VALUES ('c-1', 'Acme'), ('c-2', 'Globex');
INSERT INTO drivers (id, name, phone) VALUES ('d-1', 'Asha', '+919800000009');
INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1'), ('s-2', 'c-2');
INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, weight_kg,
                     stop_address, stop_lat, stop_lng, window_start, window_end)
SELECT 'p-' || n, 's-' || (1 + n % 2), 'c-' || (1 + n % 2), 'Ravi', '+919800000001', 1.25,
       n || ' MG Road', 12.97, 77.6, '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30'
FROM generate_series(1, 7) AS n;
"""
HOUR = timedelta(hours=1)


@pytest.fixture
def conn(legacy_dsn: str) -> Iterator[Connection]:
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(SEED)
        yield c


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedDocumentStore:
    return EmbeddedDocumentStore(tmp_path)


def _whole(entity: Entity) -> SyncRequested:
    return SyncRequested(
        event_id=f"evt-{entity.name}",
        occurred_at=datetime.now(UTC),
        request_id=f"all-{entity.name}",
        entity=entity.name,
        origin=SyncOrigin.ON_DEMAND,
        requester="test",
    )


def _sync(store: EmbeddedDocumentStore, conn: Connection) -> None:
    for each in ENTITIES.values():
        outcome = apply_request(
            store, conn, each, _whole(each), each.job, 3, lambda: datetime.now(UTC)
        )
        assert not outcome.rejected


def _reconcile(
    store: EmbeddedDocumentStore, conn: Connection, in_flight: timedelta = HOUR
) -> Reconciler:
    return Reconciler(store, conn, in_flight=in_flight, page_size=3)  # pages of 3: keyset crossed


def _tamper(conn: Connection, statement: str) -> None:
    """A write that bypasses the monolith's trigger: no new version, no new updated_at."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statement)


def test_green_after_a_sync(store: EmbeddedDocumentStore, conn: Connection) -> None:
    _sync(store, conn)

    report = _reconcile(store, conn).everything("after-sync")

    assert report.ok, report.summary()
    parcels = report.tallies["parcels"]
    assert (parcels.monolith, parcels.meridian, parcels.matched) == (7, 7, 7)
    assert (parcels.in_flight, parcels.native, parcels.differences) == (0, 0, 0)
    assert report.tallies["clients"].matched == 2 and report.tallies["drivers"].matched == 1
    assert "agree" in report.summary()


def test_a_row_tampered_with_after_the_sync_is_named_with_its_field_and_both_values(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _sync(store, conn)
    _tamper(conn, "UPDATE parcels SET weight_kg = 9.5, stop_address = 'Nowhere' WHERE id = 'p-5'")

    # No in-flight window can hide it: the bridge applied this very version of the row.
    report = _reconcile(store, conn, in_flight=timedelta(days=365)).everything("tampered")

    assert not report.ok and report.total_differences == 1
    (difference,) = report.differences
    assert (difference.entity, difference.id, difference.kind) == (
        "parcels",
        "p-5",
        Kind.FIELDS_DIFFER,
    )
    fields = {f.field: (f.monolith, f.meridian) for f in difference.fields}
    assert fields == {
        "weight_kg": ("9.500000", "1.250000"),
        "stop_address": ("Nowhere", "5 MG Road"),
    }
    assert "p-5" in report.summary() and "weight_kg" in report.summary()


def test_a_change_within_the_in_flight_window_is_not_a_difference(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _sync(store, conn)
    conn.execute("UPDATE clients SET name = 'Acme Ltd' WHERE id = 'c-1'")  # not synced yet
    conn.execute("INSERT INTO clients (id, name) VALUES ('c-3', 'Initech')")  # not in Meridian yet

    within = _reconcile(store, conn, in_flight=HOUR).everything("within")
    past = _reconcile(store, conn, in_flight=timedelta(0)).everything("past")

    assert within.ok and within.tallies["clients"].in_flight == 2
    assert {(d.id, d.kind) for d in past.differences} == {
        ("c-1", Kind.FIELDS_DIFFER),
        ("c-3", Kind.MISSING_IN_MERIDIAN),
    }


def test_a_change_in_meridian_not_yet_in_the_monolith_is_in_flight_only_within_the_window(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _sync(store, conn)
    document = store.get(CLIENTS.path("c-2"))
    assert document is not None
    store.set(
        CLIENTS.path("c-2"),
        {**document.data, "name": "Globex Corp", "updated_at": datetime.now(UTC)},
    )

    assert _reconcile(store, conn, in_flight=HOUR).everything("within").ok
    past = _reconcile(store, conn, in_flight=timedelta(0)).everything("past")
    assert [(d.id, [f.field for f in d.fields]) for d in past.differences] == [("c-2", ["name"])]


def test_records_missing_on_either_side_are_named(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _sync(store, conn)
    store.delete(PARCELS.path("p-2"))
    _tamper(conn, "DELETE FROM parcels WHERE id = 'p-3'")
    native = {**(store.get(CLIENTS.path("c-1")) or _fail()).data, "client_id": "c-native"}
    store.set(CLIENTS.path("c-native"), native)  # Meridian's own client: not the monolith's

    report = _reconcile(store, conn).everything("missing")

    assert {(d.entity, d.id, d.kind) for d in report.differences} == {
        ("parcels", "p-2", Kind.MISSING_IN_MERIDIAN),
        ("parcels", "p-3", Kind.MISSING_IN_MONOLITH),
    }
    assert (report.tallies["parcels"].monolith, report.tallies["parcels"].meridian) == (6, 6)
    assert report.tallies["clients"].native == 1 and report.tallies["clients"].differences == 0


def _fail() -> EmbeddedDocumentStore:
    raise AssertionError("no such document")


def test_the_job_checks_its_request_saves_the_report_and_exits_non_zero_naming_the_row(
    store: EmbeddedDocumentStore,
    conn: Connection,
    legacy_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _sync(store, conn)
    settings = replace(
        Settings(), data_dir=tmp_path, legacy=Legacy(dsn=legacy_dsn, in_flight_s=300)
    )
    monkeypatch.setattr("meridian.adapters.document_store", lambda *_, **__: store)
    codec = EventCodec(load_catalog())
    request = _whole(PARCELS).model_copy(update={"request_id": "req-1", "ids": ("p-1", "p-4")})
    argument = encode_argument(codec.to_message(request))

    assert sync_reconcile(argument, settings) == 0
    _tamper(conn, "UPDATE parcels SET recipient_phone = '+919811111111' WHERE id = 'p-4'")
    capsys.readouterr()
    assert sync_reconcile(argument, settings) == 1

    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "parcels p-4: recipient_phone monolith '+919811111111'" in last_line
    assert "sync_reconciliations/req-1" in last_line
    saved = latest_report(store)
    assert saved is not None and saved.report_id == "req-1" and saved.scope == "request req-1"
    assert [d.id for d in saved.differences] == ["p-4"]
    assert saved.tallies["parcels"].monolith == 2


def test_a_saved_report_reads_back_the_same(store: EmbeddedDocumentStore, conn: Connection) -> None:
    _sync(store, conn)
    _tamper(conn, "UPDATE drivers SET phone = '+919800000000' WHERE id = 'd-1'")
    report = _reconcile(store, conn).everything("round-trip")

    save_report(store, report)

    again = latest_report(store)
    assert again is not None
    assert again.differences == report.differences and again.tallies == report.tallies
    assert (again.ok, again.summary()) == (False, report.summary())
