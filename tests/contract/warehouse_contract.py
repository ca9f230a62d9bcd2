"""The Warehouse contract: one suite that every adapter must pass (``meridian.ports.Warehouse``).

Subclasses provide ``make_warehouse``; tests name their tables with ``self.table(name)`` so that
runs sharing one backend never see each other's rows. The SQL is the subset the port names, with
``$name`` parameters.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from meridian.domain.errors import NotFound, ValidationError
from meridian.ports import Warehouse

DAY_1 = datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC)
DAY_2 = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)


class WarehouseContract:
    def make_warehouse(self) -> Warehouse:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _names(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]

    def table(self, name: str) -> str:
        return f"contract_{self.suffix}.{name}"

    @pytest.fixture
    def warehouse(self) -> Warehouse:
        return self.make_warehouse()

    def test_appended_rows_are_queryable_at_once_by_another_client(
        self, warehouse: Warehouse
    ) -> None:
        pings = self.table("pings")
        warehouse.append_rows(pings, [{"message_id": "m1", "n": 1}, {"message_id": "m2", "n": 2}])
        warehouse.append_rows(pings, [{"message_id": "m3", "n": 3}])

        rows = self.make_warehouse().query(f"SELECT message_id, n FROM {pings} ORDER BY n")

        assert rows == [
            {"message_id": "m1", "n": 1},
            {"message_id": "m2", "n": 2},
            {"message_id": "m3", "n": 3},
        ]

    def test_appending_no_rows_does_nothing(self, warehouse: Warehouse) -> None:
        pings = self.table("pings")
        warehouse.append_rows(pings, [])
        with pytest.raises(NotFound):
            warehouse.query(f"SELECT * FROM {pings}")

    def test_query_parameters_are_bound_by_name(self, warehouse: Warehouse) -> None:
        pings = self.table("pings")
        warehouse.append_rows(
            pings,
            [
                {"vehicle": "v1", "speed": 10.5, "publish_time": DAY_1},
                {"vehicle": "v2", "speed": 30.0, "publish_time": DAY_2},
                {"vehicle": "v1", "speed": 50.0, "publish_time": DAY_2 + timedelta(hours=1)},
            ],
        )

        rows = warehouse.query(
            f"SELECT vehicle, speed FROM {pings}"
            " WHERE vehicle = $vehicle AND publish_time >= $since ORDER BY speed",
            {"vehicle": "v1", "since": DAY_2},
        )

        assert rows == [{"vehicle": "v1", "speed": 50.0}]

    def test_json_text_reads_a_key_of_a_json_object_column(self, warehouse: Warehouse) -> None:
        events = self.table("events")
        warehouse.append_rows(
            events,
            [
                {
                    "attributes": '{"eventId":"e-1","eventType":"ParcelDelivered"}',
                    "publish_time": DAY_1,
                },
                {
                    "attributes": '{"eventId":"e-2","eventType":"DeliveryFailed"}',
                    "publish_time": DAY_1,
                },
                {"attributes": '{"eventType":"VehiclePing"}', "publish_time": DAY_1},
            ],
        )
        event_id = warehouse.json_text("attributes", "eventId")

        rows = warehouse.query(
            f"SELECT {event_id} AS event_id FROM {events}"
            f" WHERE {warehouse.json_text('attributes', 'eventType')} = $type",
            {"type": "ParcelDelivered"},
        )
        assert rows == [{"event_id": "e-1"}]
        missing = warehouse.query(
            f"SELECT COUNT(*) AS n FROM {events} WHERE {event_id} IS NULL", {}
        )
        assert missing == [{"n": 1}]
        with pytest.raises(ValidationError):
            warehouse.json_text("attributes) OR (1", "eventId")

    def test_rows_are_partitioned_by_the_utc_day_of_their_publish_time(
        self, warehouse: Warehouse
    ) -> None:
        # The last microsecond of one day and the first of the next fall in two partitions; the
        # partition is where rows live, not a column of the table.
        pings = self.table("pings")
        east = timezone(timedelta(hours=5, minutes=30))
        warehouse.append_rows(
            pings,
            [
                {"message_id": "late", "publish_time": DAY_1},
                {"message_id": "early", "publish_time": DAY_2},
                {"message_id": "early-ist", "publish_time": DAY_2.astimezone(east)},
            ],
        )

        by_day = warehouse.query(
            f"SELECT CAST(publish_time AS DATE) AS day, COUNT(*) AS n FROM {pings}"
            " GROUP BY CAST(publish_time AS DATE) ORDER BY day"
        )
        everything = warehouse.query(f"SELECT * FROM {pings} ORDER BY message_id")

        assert [(str(r["day"]), r["n"]) for r in by_day] == [("2026-11-20", 1), ("2026-11-21", 2)]
        assert [set(r) for r in everything] == [{"message_id", "publish_time"}] * 3

    def test_values_round_trip_with_their_types(self, warehouse: Warehouse) -> None:
        facts = self.table("facts")
        row: dict[str, Any] = {
            "text": "é ✓",
            "count": 7,
            "ratio": 2.5,
            "flag": True,
            "blob": b"\x00\xff",
            "nothing": None,
            "publish_time": datetime(2026, 11, 21, 9, 30, 15, 123456, tzinfo=UTC),
        }
        warehouse.append_rows(facts, [row, {**row, "nothing": "later"}])

        [got] = warehouse.query(f"SELECT * FROM {facts} WHERE nothing IS NULL")

        assert got == row
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in row.items()}
        assert got["publish_time"].utcoffset() == timedelta(0)

    def test_naive_datetimes_are_taken_as_utc(self, warehouse: Warehouse) -> None:
        facts = self.table("facts")
        warehouse.append_rows(facts, [{"seen_at": datetime(2026, 11, 21, 9, 30)}])
        [got] = warehouse.query(f"SELECT seen_at FROM {facts}")
        assert got["seen_at"] == datetime(2026, 11, 21, 9, 30, tzinfo=UTC)

    def test_appends_may_bring_new_columns_older_rows_read_them_as_null(
        self, warehouse: Warehouse
    ) -> None:
        facts = self.table("facts")
        warehouse.append_rows(facts, [{"id": 1}])
        warehouse.append_rows(facts, [{"id": 2, "note": "new"}])
        rows = warehouse.query(f"SELECT id, note FROM {facts} ORDER BY id")
        assert rows == [{"id": 1, "note": None}, {"id": 2, "note": "new"}]

    def test_a_table_not_named_dataset_table_is_refused(self, warehouse: Warehouse) -> None:
        for bad in ("pings", "a.b.c", "1x.pings", "x.pi-ngs"):
            with pytest.raises(ValidationError):
                warehouse.append_rows(bad, [{"n": 1}])

    def test_an_unknown_table_is_not_found(self, warehouse: Warehouse) -> None:
        with pytest.raises(NotFound):
            warehouse.query(f"SELECT * FROM {self.table('never_written')}")

    @pytest.mark.parametrize(
        ("sql", "parameters"),
        [
            ("SELEC n FROM {t}", None),  # syntax
            ("SELECT no_such_column FROM {t}", None),
            ("SELECT n FROM {t} WHERE n = $missing", {}),
        ],
    )
    def test_sql_the_engine_refuses_is_a_validation_error(
        self, warehouse: Warehouse, sql: str, parameters: dict[str, Any] | None
    ) -> None:
        facts = self.table("facts")
        warehouse.append_rows(facts, [{"n": 1}])
        with pytest.raises(ValidationError):
            warehouse.query(sql.format(t=facts), parameters)
