"""The bridge's row <-> document mapping over a real PostgreSQL: a row mapped into a document and
back gives the row's synced fields, the checksums of both sides agree, and any synced field that
differs changes the checksum. Also the echo markers of legacy/schema.sql's trigger."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from services.sync import entities as en
from services.sync.legacy import as_meridian

SEED = """
INSERT INTO clients (id, name, email) VALUES ('c-1', 'Acme', 'ops@acme.test');
INSERT INTO drivers (id, name, phone) VALUES ('d-1', 'Asha', '+919812345678');
INSERT INTO vehicles (id, capacity_kg, capacity_parcels, depot_lat, depot_lng)
    VALUES ('v-1', 750.5, 40, 12.9716, 77.5946);
INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1');
INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, weight_kg,
                     stop_address, stop_lat, stop_lng, window_start, window_end)
    VALUES ('p-1', 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, '12 MG Road', 12.97, 77.6,
            '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30');
"""


def _rows(dsn: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


@pytest.mark.parametrize("name", list(en.ENTITIES))
def test_row_and_document_checksums_agree(legacy_dsn: str, name: str) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        conn.execute(SEED)
    entity = en.entity(name)
    (row,) = _rows(legacy_dsn, entity.table)
    document = entity.to_document(row)
    assert document[entity.id_field] == row["id"]
    back = entity.to_row(document)
    assert set(back) == set(entity.columns)
    assert en.document_checksum(entity, document) == en.row_checksum(entity, row)


def test_a_changed_synced_field_changes_the_checksum(legacy_dsn: str) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        conn.execute(SEED)
    (row,) = _rows(legacy_dsn, "parcels")
    before = en.row_checksum(en.PARCELS, row)
    for column, value in (("status", "DELIVERED"), ("weight_kg", 1.26), ("stop_lat", 12.971)):
        assert en.row_checksum(en.PARCELS, {**row, column: value}) != before, column
    # Not synced: the stamps the trigger keeps.
    assert en.row_checksum(en.PARCELS, {**row, "version": 9, "written_by": "meridian"}) == before


def test_the_trigger_stamps_who_wrote_each_change(legacy_dsn: str) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        conn.execute(SEED)
    with psycopg.connect(legacy_dsn) as conn:
        conn.execute("UPDATE parcels SET status = 'PLANNED' WHERE id = 'p-1'")
    (row,) = _rows(legacy_dsn, "parcels")
    assert (row["version"], row["written_by"]) == (2, en.MONOLITH)
    with psycopg.connect(legacy_dsn) as conn:
        as_meridian(conn)
        conn.execute("UPDATE parcels SET status = 'ASSIGNED' WHERE id = 'p-1'")
    with psycopg.connect(legacy_dsn) as conn:  # the setting was the transaction's only
        conn.execute("UPDATE drivers SET status = 'OFF_DUTY' WHERE id = 'd-1'")
    (row,) = _rows(legacy_dsn, "parcels")
    (driver,) = _rows(legacy_dsn, "drivers")
    assert (row["version"], row["written_by"]) == (3, en.MERIDIAN)
    assert driver["written_by"] == en.MONOLITH


def test_an_unknown_entity_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown entity 'parcel': it must be one of clients"):
        en.entity("parcel")
