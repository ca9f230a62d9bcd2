"""The first load over a real PostgreSQL and the embedded stores, through ``meridian sync
backfill``: everything arrives and reconciles, the pull is handed the horizon, a second run has
nothing to do; killed with SIGKILL mid-way and run again, it continues from its checkpoint and
applies nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg.rows import dict_row
from typer.testing import CliRunner

from meridian import adapters
from meridian.config import Settings
from meridian.ports import DocumentStore, Query
from meridian.runtime.cli import app
from services.sync.backfill import read_checkpoint
from services.sync.entities import CLIENTS, LINKS, PARCELS, SHIPMENTS
from services.sync.reconcile import Reconciler

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ROWS = 1500


def _seed(dsn: str, clients: int, shipments: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO clients (id, name) SELECT 'c-' || lpad(n::text, 5, '0'), 'Client ' || n"
            " FROM generate_series(1, %s) AS n",
            (clients,),
        )
        conn.execute(
            "INSERT INTO shipments (id, client_id) SELECT 's-' || lpad(n::text, 5, '0'), 'c-00001'"
            " FROM generate_series(1, %s) AS n",
            (shipments,),
        )
        conn.execute(
            "INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone,"
            " weight_kg, stop_address, stop_lat, stop_lng, window_start, window_end)"
            " SELECT 'p-' || lpad(n::text, 6, '0'), 's-' || lpad((1 + n %% %s)::text, 5, '0'),"
            " 'c-00001', 'Ravi', '+919800000001', 1.5, n || ' MG Road', 12.97, 77.6,"
            " '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30'"
            " FROM generate_series(1, %s) AS n",
            (shipments, shipments * 3),
        )


def _store(data_dir: Path) -> DocumentStore:
    return adapters.document_store(replace(Settings(), data_dir=data_dir), rereads=False)


def _invoke(dsn: str, data_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["sync", "backfill", "--data-dir", str(data_dir), *args],
        env={"MERIDIAN_LEGACY_DSN": dsn},
    )
    return result.exit_code, result.output


def test_backfill_moves_everything_hands_over_to_the_pull_and_a_rerun_has_nothing_to_do(
    legacy_dsn: str, tmp_path: Path
) -> None:
    _seed(legacy_dsn, clients=40, shipments=20)

    code, output = _invoke(legacy_dsn, tmp_path, "--batch", "7")

    assert code == 0, output
    assert "backfill: 120 rows" in output and "rows/s" in output
    store = _store(tmp_path)
    assert len(store.query(Query(PARCELS.collection))) == 60
    assert all(read_checkpoint(store, name).done for name in ("clients", "shipments", "parcels"))
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as conn:
        report = Reconciler(store, conn, in_flight=timedelta(0)).everything("after-backfill")
        cursors = conn.execute("SELECT entity, id FROM bridge_cursors ORDER BY entity").fetchall()
    assert report.ok, report.summary()
    assert report.tallies["parcels"].matched == 60
    # The pull starts where the backfill began, not at the beginning of time.
    assert {c["entity"] for c in cursors} == {
        "clients",
        "drivers",
        "vehicles",
        "shipments",
        "parcels",
    }

    code, output = _invoke(legacy_dsn, tmp_path)
    assert code == 0 and "backfill: 0 rows" in output, output


CHILD_ENV_KEYS = ("PATH", "HOME", "LANG")


def test_a_backfill_killed_mid_way_continues_from_its_checkpoint_and_applies_nothing_twice(
    legacy_dsn: str, tmp_path: Path
) -> None:
    _seed(legacy_dsn, clients=CLIENT_ROWS, shipments=30)
    child = subprocess.Popen(
        [sys.executable, "-m", "meridian.runtime.cli", "sync", "backfill", "--batch", "5"],
        cwd=ROOT,
        env={
            **{k: os.environ[k] for k in CHILD_ENV_KEYS if k in os.environ},
            "PYTHONPATH": str(ROOT),
            "MERIDIAN_LEGACY_DSN": legacy_dsn,
            "MERIDIAN_DATA_DIR": str(tmp_path),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, "the backfill ended before it could be killed"
            assert time.monotonic() < deadline, "the backfill made no progress within a minute"
            started = (tmp_path / "stores").exists()
            if started and read_checkpoint(_store(tmp_path), "clients").rows >= CLIENT_ROWS // 4:
                break
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    store = _store(tmp_path)
    checkpoint = read_checkpoint(store, "clients")
    before = {d.id: d.data["updated_at"] for d in store.query(Query(CLIENTS.collection))}
    assert not checkpoint.done and checkpoint.rows <= len(before) < CLIENT_ROWS  # mid-way

    code, output = _invoke(legacy_dsn, tmp_path, "--batch", "50")

    assert code == 0, output
    store = _store(tmp_path)
    clients = {d.id: d.data for d in store.query(Query(CLIENTS.collection))}
    assert len(clients) == CLIENT_ROWS
    # What committed before the kill was not written again, however far the checkpoint had got.
    assert {i: clients[i]["updated_at"] for i in before} == before
    assert all(d["_sync"]["version"] == 1 for d in clients.values())
    links = store.query(Query(LINKS))
    assert len(links) == CLIENT_ROWS + 30 + 90
    assert len(store.query(Query(SHIPMENTS.collection))) == 30
    # Resumed from the checkpoint: the rows before it were not read again.
    assert f"backfill: {CLIENT_ROWS - checkpoint.rows + 30 + 90} rows" in output
