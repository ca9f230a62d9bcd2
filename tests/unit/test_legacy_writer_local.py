"""`meridian up` runs the migration bridge's legacy writer only when a legacy database is
configured, and applies its subscription only then: with no writer to push to, every parcel
fact would otherwise end in its dead-letter topic."""

from __future__ import annotations

from pathlib import Path

from meridian.catalog import load_catalog
from meridian.config import Legacy, Settings
from meridian.embedded.pubsub.broker import Broker
from meridian.runtime.platform import prepare_data_dir
from meridian.runtime.supervisor import local_catalog, runnable_services

CATALOG = load_catalog()
WRITER_SUBSCRIPTIONS = {"legacy-writer", "legacy-writer-dead-letters"}


def _settings(tmp_path: Path, dsn: str) -> Settings:
    return Settings(data_dir=tmp_path, legacy=Legacy(dsn=dsn))


def test_without_a_legacy_database_the_writer_is_neither_started_nor_subscribed(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, "")
    assert "legacy-writer" not in {p.name for p in runnable_services(CATALOG, settings)}
    local = local_catalog(CATALOG, settings)
    assert "legacy-writer" not in local.services
    assert not WRITER_SUBSCRIPTIONS & set(local.subscriptions)
    assert set(CATALOG.subscriptions) - set(local.subscriptions) == WRITER_SUBSCRIPTIONS
    prepare_data_dir(CATALOG, settings)
    broker = Broker(tmp_path, project=settings.project)
    try:
        names = {s.name for s in broker.list_subscriptions()}
    finally:
        broker.close()
    assert "billing" in names and not WRITER_SUBSCRIPTIONS & names


def test_with_a_legacy_database_the_writer_runs_on_its_port_and_is_subscribed(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, "host=127.0.0.1 dbname=monolith")
    (writer,) = [p for p in runnable_services(CATALOG, settings) if p.name == "legacy-writer"]
    assert writer.port == settings.port_of("legacy-writer")
    assert writer.argv[-1] == "services.sync.writer.app"
    assert local_catalog(CATALOG, settings).subscriptions == CATALOG.subscriptions
