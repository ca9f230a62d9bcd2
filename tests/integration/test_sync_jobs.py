"""The bridge's jobs as the sync workflow runs them: the pull's page, passed as the workflow
passes it (the Pub/Sub message, base64 JSON), applied by ``sync-shipments`` into the command's
store; ``sync-identities`` leaves another job's entity alone."""

from __future__ import annotations

from pathlib import Path

import psycopg

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Legacy, Settings
from services.sync.envelope import encode_argument
from services.sync.jobs import JOBS
from services.sync.pull import run_pull
from tests.fakes import FakePublisher

CODEC = EventCodec(load_catalog())


def test_a_monolith_shipment_reaches_meridian_through_pull_and_job(
    legacy_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        conn.execute(
            """
            INSERT INTO clients (id, name) VALUES ('c-1', 'Acme');
            INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1');
            INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone,
                                 weight_kg, stop_address, stop_lat, stop_lng, window_start,
                                 window_end)
            VALUES ('p-1', 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, '12 MG Road', 12.97,
                    77.6, '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30');
            """
        )
    settings = Settings(data_dir=tmp_path, legacy=Legacy(dsn=legacy_dsn))
    publisher = FakePublisher()
    assert run_pull(settings, publisher, "parcels", codec=CODEC) == 1
    ((_, message),) = publisher.published
    argument = encode_argument(message)

    assert JOBS["sync-identities"](argument, settings) == 0  # parcels are not its entity
    store = adapters.document_store(settings)
    assert store.get("parcels/p-1") is None

    assert JOBS["sync-shipments"](argument, settings) == 0
    assert JOBS["sync-shipments"](argument, settings) == 0  # again: nothing more
    shipment, parcel = store.get("shipments/s-1"), store.get("parcels/p-1")
    assert shipment is not None and shipment.data["parcel_ids"] == ["p-1"]
    assert parcel is not None and parcel.data["status"] == "CREATED"
