"""The contract of ``services.sync.writer.tables.LegacyTables``: one abstract suite, subclassed
for the PostgreSQL adapter and the unit tests' fake (``tests/contract/test_legacy_tables.py``),
so the fake the handler's unit tests run on behaves as the monolith's database does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.sync.entities import CLIENTS, PARCELS, SHIPMENTS
from services.sync.writer.tables import Fact, LegacyParcel, LegacyTables

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def fact(event_id: str, parcel_id: str = "p-1", minutes: int = 0) -> Fact:
    return Fact(event_id, "ParcelDelivered", parcel_id, T0 + timedelta(minutes=minutes))


class Boom(Exception):
    pass


class LegacyTablesContract:
    """Subclasses provide ``tables`` (a fixture: a fresh, empty monolith), ``seed`` (a parcel
    as the monolith writes it, which the pull has not read) and ``pull_past`` (the pull's cursor
    moved to that parcel's change)."""

    def seed(self, tables: LegacyTables, parcel_id: str, status: str) -> None:
        raise NotImplementedError

    def pull_past(self, tables: LegacyTables, parcel_id: str) -> None:
        raise NotImplementedError

    def read(self, tables: LegacyTables, parcel_id: str) -> LegacyParcel | None:
        with tables.transaction() as tx:
            return tx.parcel(parcel_id)

    def test_an_event_is_claimed_once(self, tables: LegacyTables) -> None:
        with tables.transaction() as tx:
            assert tx.claim(fact("e-1")) is True
            assert tx.claim(fact("e-1")) is False
        with tables.transaction() as tx:
            assert tx.claim(fact("e-1")) is False

    def test_a_transaction_that_raises_leaves_nothing(self, tables: LegacyTables) -> None:
        self.seed(tables, "p-1", "CREATED")
        with pytest.raises(Boom), tables.transaction() as tx:
            tx.claim(fact("e-1"))
            tx.update_parcel("p-1", {"status": "PLANNED"})
            raise Boom
        row = self.read(tables, "p-1")
        assert row is not None and row.status == "CREATED" and row.written_by == "monolith"
        with tables.transaction() as tx:
            assert tx.claim(fact("e-1")) is True

    def test_a_savepoint_that_raises_is_undone_alone(self, tables: LegacyTables) -> None:
        self.seed(tables, "p-1", "CREATED")
        self.seed(tables, "p-2", "CREATED")
        with tables.transaction() as tx:
            with tx.savepoint():
                tx.claim(fact("e-1"))
                tx.update_parcel("p-1", {"status": "PLANNED"})
            with pytest.raises(Boom), tx.savepoint():
                tx.claim(fact("e-2", "p-2"))
                tx.update_parcel("p-2", {"status": "PLANNED"})
                raise Boom
        assert self.read(tables, "p-1").status == "PLANNED"  # type: ignore[union-attr]
        assert self.read(tables, "p-2").status == "CREATED"  # type: ignore[union-attr]
        with tables.transaction() as tx:
            assert (tx.claim(fact("e-1")), tx.claim(fact("e-2", "p-2"))) == (False, True)

    def test_an_unknown_parcel_is_none(self, tables: LegacyTables) -> None:
        assert self.read(tables, "nope") is None

    def test_a_write_is_the_bridges_with_a_new_version_and_time(self, tables: LegacyTables) -> None:
        self.seed(tables, "p-1", "OUT_FOR_DELIVERY")
        before = self.read(tables, "p-1")
        assert before is not None and before.written_by == "monolith"
        delivered_at = T0 + timedelta(hours=1)
        changes = {
            "status": "DELIVERED",
            "driver_id": "d-1",
            "delivered_at": delivered_at,
            "delivered_lat": 12.5,
            "delivered_lng": 77.25,
        }
        with tables.transaction() as tx:
            tx.update_parcel("p-1", changes)
        after = self.read(tables, "p-1")
        assert after is not None
        assert {k: after.values[k] for k in changes} == changes
        assert after.values["attempts"] == before.values["attempts"]  # untouched
        assert after.written_by == "meridian"
        assert after.version == before.version + 1
        assert after.updated_at >= before.updated_at

    def test_only_the_pushed_columns_are_written(self, tables: LegacyTables) -> None:
        self.seed(tables, "p-1", "CREATED")
        with pytest.raises(ValueError, match="recipient_name"), tables.transaction() as tx:
            tx.update_parcel("p-1", {"recipient_name": "Someone else"})

    def test_a_newer_fact_is_one_about_the_same_parcel_that_occurred_later(
        self, tables: LegacyTables
    ) -> None:
        with tables.transaction() as tx:
            tx.claim(fact("e-2", minutes=2))
            tx.claim(fact("e-9", "p-9", minutes=9))
        with tables.transaction() as tx:
            assert tx.newer_fact(fact("e-1", minutes=1)) is True
            assert tx.newer_fact(fact("e-3", minutes=3)) is False
            assert tx.newer_fact(fact("e-2", minutes=2)) is False  # itself
            assert tx.newer_fact(fact("e-0", "p-0", minutes=0)) is False  # another parcel

    def test_a_write_may_leave_the_row_the_monoliths(self, tables: LegacyTables) -> None:
        self.seed(tables, "p-1", "CREATED")
        with tables.transaction() as tx:
            tx.update_parcel("p-1", {"status": "PLANNED"}, as_bridge=False)
            tx.update_parcel("p-1", {"driver_id": "d-1"})
        row = self.read(tables, "p-1")
        assert row is not None and row.values["driver_id"] == "d-1"
        assert (row.written_by, row.version) == ("meridian", 3)
        with tables.transaction() as tx:
            tx.update_parcel("p-1", {"status": "ASSIGNED"}, as_bridge=False)
        row = self.read(tables, "p-1")
        assert row is not None and (row.status, row.written_by) == ("ASSIGNED", "monolith")

    def test_pulled_says_whether_the_pulls_cursor_passed_the_change(
        self, tables: LegacyTables
    ) -> None:
        self.seed(tables, "p-1", "CREATED")
        assert self.read(tables, "p-1").pulled is False  # type: ignore[union-attr]
        self.pull_past(tables, "p-1")
        assert self.read(tables, "p-1").pulled is True  # type: ignore[union-attr]
        with tables.transaction() as tx:
            tx.update_parcel("p-1", {"status": "PLANNED"}, as_bridge=False)
        assert self.read(tables, "p-1").pulled is False  # type: ignore[union-attr]

    def test_an_insert_is_the_bridges_and_leaves_an_existing_row_alone(
        self, tables: LegacyTables
    ) -> None:
        parcel = {
            "id": "p-9",
            "shipment_id": "s-9",
            "client_id": "c-9",
            "recipient_name": "Meena",
            "recipient_phone": "+919800000009",
            "weight_kg": 2.5,
            "stop_address": "9 Residency Road",
            "stop_lat": 12.93,
            "stop_lng": 77.62,
            "window_start": T0,
            "window_end": T0 + timedelta(hours=2),
            "status": "PLANNED",
            "driver_id": None,
            "vehicle_id": None,
            "attempts": 0,
            "failure_reason": None,
            "delivered_at": None,
            "delivered_lat": None,
            "delivered_lng": None,
            "deleted_at": None,
        }
        client = {"id": "c-9", "name": "Nova Retail", "email": None, "deleted_at": None}
        shipment = {"id": "s-9", "client_id": "c-9", "created_at": T0, "deleted_at": None}
        with tables.transaction() as tx:
            assert tx.insert(CLIENTS, client) is True
            assert tx.insert(SHIPMENTS, shipment) is True
            assert tx.insert(PARCELS, parcel) is True
        row = self.read(tables, "p-9")
        assert row is not None and (row.status, row.written_by, row.version) == (
            "PLANNED",
            "meridian",
            1,
        )
        with tables.transaction() as tx:
            assert tx.insert(CLIENTS, {**client, "name": "Other"}) is False
            assert tx.insert(PARCELS, {**parcel, "status": "CREATED"}) is False
        row = self.read(tables, "p-9")
        assert row is not None and (row.status, row.version) == ("PLANNED", 1)

    def test_an_insert_in_a_savepoint_that_raises_is_undone(self, tables: LegacyTables) -> None:
        client = {"id": "c-9", "name": "Nova Retail", "email": None, "deleted_at": None}
        with tables.transaction() as tx:
            with pytest.raises(Boom), tx.savepoint():
                tx.insert(CLIENTS, client)
                raise Boom
            assert tx.insert(CLIENTS, client) is True
