"""``meridian sync`` over a real PostgreSQL and the embedded runtime's data directory: ``run``
publishes the SyncRequested the API would; ``reconcile`` prints a table naming the row and field
that differ and exits 1; ``status --json`` shows the cursors with their lag, the runs with their
outcome (from the archived SyncStarted/SyncError) and the last reconciliation; mistakes are one
line and a non-zero exit."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.events import SyncOrigin, SyncRequested
from meridian.embedded.pubsub.bigquery import BigQuerySink
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.runtime.cli import app
from meridian.runtime.platform import prepare_data_dir
from services.sync.envelope import pubsub_json
from services.sync.report import publish_report

CODEC = EventCodec(load_catalog())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    prepare_data_dir(load_catalog(), replace(Settings(), data_dir=tmp_path))
    return tmp_path


def _meridian(dsn: str, data_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["sync", *args, "--data-dir", str(data_dir)],
        env={"MERIDIAN_LEGACY_DSN": dsn, "COLUMNS": "200"},
    )
    return result.exit_code, result.output


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO clients (id, name) VALUES ('c-1', 'Acme'), ('c-2', 'Globex')")


def test_run_publishes_the_same_sync_requested_as_the_api(legacy_dsn: str, data_dir: Path) -> None:
    Broker(data_dir).create_subscription(SubscriptionConfig("watch", "sync.requests"))

    code, out = _meridian(legacy_dsn, data_dir, "run", "--entity", "parcels", "--ids", "p-1,p-2")

    assert code == 0, out
    (message,) = Broker(data_dir).pull("watch", 10)
    event = CODEC.from_message(message.message.data, message.message.attributes)
    assert isinstance(event, SyncRequested)
    assert (event.entity, event.ids, event.origin) == ("parcels", ("p-1", "p-2"), "on_demand")
    assert event.request_id in out


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "--entity", "boats"], "entity"),
        (["run", "--entity", "parcels", "--ids", "p-1", "--since", "2026-03-02T06:00:00Z"], "not both"),
        (["run", "--entity", "parcels", "--since", "yesterday"], "since"),
        (["reconcile", "--entity", "boats"], "unknown entity 'boats'"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_and_a_non_zero_exit(
    legacy_dsn: str, data_dir: Path, args: list[str], said: str
) -> None:
    code, out = _meridian(legacy_dsn, data_dir, *args)
    assert code == 2 and said in out and "Traceback" not in out, out


def test_reconcile_shows_the_differences_and_status_the_whole_picture(
    legacy_dsn: str, data_dir: Path
) -> None:
    _seed(legacy_dsn)
    code, out = _meridian(legacy_dsn, data_dir, "backfill", "--entity", "clients")
    assert code == 0, out
    code, out = _meridian(legacy_dsn, data_dir, "reconcile", "--in-flight", "0")
    assert code == 0 and "agree" in out, out

    with psycopg.connect(legacy_dsn) as conn:
        conn.execute("SET session_replication_role = replica")  # bypass the trigger: tampering
        conn.execute("UPDATE clients SET email = 'x@acme.example' WHERE id = 'c-2'")
    code, out = _meridian(legacy_dsn, data_dir, "reconcile", "--entity", "clients")

    assert code == 1, out
    (row,) = [line for line in out.splitlines() if "│ c-2" in line and "fields_differ" in line]
    assert "email" in row and "'x@acme.example'" in row and "None" in row
    assert "1 difference(s)" in out

    # A run reported by the workflow's sync-report job, archived like every event.
    request = SyncRequested(
        event_id="evt-r",
        occurred_at=datetime.now(UTC),
        request_id="req-7",
        entity="clients",
        origin=SyncOrigin.SCHEDULED,
        requester="sync-pull",
        ids=("c-2",),
    )
    message = pubsub_json(CODEC.to_message(request))
    broker = Broker(data_dir)
    for outcome in ("started", "error"):
        report = {"outcome": outcome, "message": message, "execution_id": "ex-1"}
        if outcome == "error":
            report |= {"step": "sync-reconcile", "reason": "clients c-2: email differs"}
        publish_report(encode_argument_of(report), CODEC, broker)
    BigQuerySink(broker, EmbeddedWarehouse(data_dir)).drain_once()

    code, out = _meridian(legacy_dsn, data_dir, "status", "--json")

    assert code == 0, out
    status = json.loads(out)
    clients = next(c for c in status["cursors"] if c["entity"] == "clients")
    assert clients["id"] == "" and clients["lag_s"] == 0  # handed over by the backfill
    (run,) = status["runs"]
    assert (run["request_id"], run["outcome"], run["step"]) == ("req-7", "error", "sync-reconcile")
    assert run["started_at"] is not None
    reconciliation = status["reconciliation"]
    assert reconciliation["ok"] is False
    assert [d["id"] for d in reconciliation["differences"]] == ["c-2"]

    code, out = _meridian(legacy_dsn, data_dir, "status")
    assert code == 0 and "req-7" in out and "difference(s)" in out, out


def encode_argument_of(report: dict[str, object]) -> str:
    """The sync-report job's argument, as the workflow encodes it."""
    return base64.b64encode(json.dumps(report).encode()).decode()
