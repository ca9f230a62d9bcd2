"""`meridian replay` on an embedded data directory the catalog was applied to: seek to a time,
snapshot then seek to it, republish an archived window, and usage errors as one line, exit 2."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meridian.catalog import load_catalog
from meridian.config import Settings
from meridian.embedded.pubsub.bigquery import BigQuerySink
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.ports import Message
from meridian.runtime.cli import app
from meridian.runtime.platform import prepare_data_dir

TOPIC = "logistics.events"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    prepare_data_dir(load_catalog(), Settings(data_dir=tmp_path))
    Broker(tmp_path).create_subscription(SubscriptionConfig("audit", TOPIC))
    return tmp_path


def _meridian(data_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _event(n: int, event_type: str = "ParcelDelivered") -> Message:
    attributes = {"eventType": event_type, "eventId": f"evt-{n}", "subject": f"p-{n}"}
    return Message(f"e{n}".encode(), attributes)


def _backlog(broker: Broker, subscription: str) -> list[str]:
    got = broker.pull(subscription, 100)
    broker.acknowledge(subscription, [m.ack_id for m in got])
    return [m.message.attributes["eventId"] for m in got]


def test_seek_to_a_time_then_to_a_snapshot(data_dir: Path) -> None:
    broker = Broker(data_dir)
    broker.publish(TOPIC, [_event(1)])
    time.sleep(0.05)
    mark = datetime.now(UTC)
    time.sleep(0.05)
    broker.publish(TOPIC, [_event(2)])
    assert _backlog(broker, "billing") == ["evt-1", "evt-2"]

    code, out = _meridian(data_dir, "replay", "--subscription", "billing", "--to", mark.isoformat())
    assert code == 0, out
    assert f"subscription billing sought to {mark.isoformat()}" in out
    assert _backlog(broker, "billing") == ["evt-2"]

    code, out = _meridian(
        data_dir, "replay", "snapshot", "create", "--subscription", "billing", "--name", "before"
    )
    assert code == 0 and "snapshot before of subscription billing created" in out, out
    broker.publish(TOPIC, [_event(3)])
    assert _backlog(broker, "billing") == ["evt-3"]
    code, out = _meridian(data_dir, "replay", "--subscription", "billing", "--snapshot", "before")
    assert code == 0, out
    assert _backlog(broker, "billing") == ["evt-3"]
    assert _backlog(broker, "eta") == ["evt-1", "evt-2", "evt-3"]  # other subscriptions untouched


def test_archive_republishes_the_window_filtered(data_dir: Path) -> None:
    broker = Broker(data_dir)
    start = datetime.now(UTC) - timedelta(seconds=1)
    broker.publish(TOPIC, [_event(1), _event(2, "DeliveryFailed"), _event(3)])
    BigQuerySink(broker, EmbeddedWarehouse(data_dir)).drain_once()
    _backlog(broker, "audit")
    end = datetime.now(UTC) + timedelta(seconds=1)
    code, out = _meridian(
        data_dir, "replay", "archive", "--topic", TOPIC, "--from", start.isoformat(),
        "--to", end.isoformat(), "--filter", 'attributes.eventType = "ParcelDelivered"',
    )  # fmt: skip
    assert code == 0, out
    assert (
        "republished 2 events to logistics.events from events.business_events"
        " (3 archived rows in the window, 1 filtered out, 0 duplicates)" in out
    )
    assert _backlog(broker, "audit") == ["evt-1", "evt-3"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["replay", "--subscription", "nope", "--to", "2026-11-21T08:00:00Z"], "no subscription"),
        (["replay", "--subscription", "eta"], "give one of --to TIME or --snapshot NAME"),
        (["replay", "--subscription", "eta", "--to", "yesterday"], "not an ISO 8601 time"),
        (["replay", "archive", "--from", "2026-11-21", "--to", "2026-11-20"], "must be after"),
        (
            ["replay", "archive", "--from", "2026-11-20", "--to", "2026-11-21", "--filter", "x ="],
            "--filter",
        ),
        (["replay", "archive", "--topic", "eta.dlq", "--from", "2026-11-20", "--to", "2026-11-21"],
         "no BigQuery subscription"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_naming_the_problem(
    data_dir: Path, args: list[str], said: str
) -> None:
    code, out = _meridian(data_dir, *args)
    assert code == 2 and said in out, out
