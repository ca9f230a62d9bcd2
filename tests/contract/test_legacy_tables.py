"""The legacy writer's port, held to one contract on the monolith's PostgreSQL (a real server,
``tests/legacy_db.py``) and on the unit tests' fake."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from meridian.config import Legacy, Settings
from services.sync.writer.postgres import PostgresTables
from services.sync.writer.tables import LegacyTables
from tests.contract.legacy_tables_contract import LegacyTablesContract
from tests.fakes_legacy import FakeLegacyTables

SEED = """
INSERT INTO clients (id, name) VALUES ('c-1', 'Acme') ON CONFLICT DO NOTHING;
INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1') ON CONFLICT DO NOTHING;
INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, weight_kg,
                     stop_address, stop_lat, stop_lng, window_start, window_end, status)
VALUES (%s, 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, '1 MG Road', 12.97, 77.6,
        '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30', %s);
"""


class TestPostgresTables(LegacyTablesContract):
    @pytest.fixture
    def tables(self, legacy_dsn: str) -> Iterator[LegacyTables]:
        self.dsn = legacy_dsn
        tables = PostgresTables(Settings(legacy=Legacy(dsn=legacy_dsn)), size=2)
        yield tables
        tables.close()

    def seed(self, tables: LegacyTables, parcel_id: str, status: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for statement in SEED.strip().split(";\n")[:2]:
                conn.execute(statement)
            conn.execute(SEED.strip().split(";\n")[2], (parcel_id, status))

    def pull_past(self, tables: LegacyTables, parcel_id: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO bridge_cursors (entity, updated_at, id) "
                "SELECT 'parcels', updated_at, id FROM parcels WHERE id = %s "
                "ON CONFLICT (entity) DO UPDATE SET updated_at = excluded.updated_at, id = excluded.id",
                (parcel_id,),
            )


class TestFakeLegacyTables(LegacyTablesContract):
    @pytest.fixture
    def tables(self) -> LegacyTables:
        return FakeLegacyTables()

    def seed(self, tables: LegacyTables, parcel_id: str, status: str) -> None:
        assert isinstance(tables, FakeLegacyTables)
        tables.add_parcel(parcel_id, status=status, pulled=False)

    def pull_past(self, tables: LegacyTables, parcel_id: str) -> None:
        assert isinstance(tables, FakeLegacyTables)
        tables.pull_past(parcel_id)
