"""The Warehouse contract on the BigQuery adapter, against the stand-in of Google's
``bigquery.Client`` (``bigquery_stand_in.py``: BigQuery has no emulator; the stand-in keeps
tables, streamed rows and runs the adapter's GoogleSQL with DuckDB)."""

from __future__ import annotations

import pytest

from meridian.gcp.bigquery import BigQueryWarehouse
from meridian.ports import Warehouse

from .bigquery_stand_in import StubBigQuery
from .warehouse_contract import WarehouseContract

PROJECT = "meridian-test"


class TestBigQueryWarehouse(WarehouseContract):
    @pytest.fixture(autouse=True)
    def _client(self) -> None:
        # One BigQuery behind every adapter built by a test ("another client" sees the rows).
        self.bigquery = StubBigQuery(PROJECT)

    def make_warehouse(self) -> Warehouse:
        return BigQueryWarehouse(PROJECT, client=self.bigquery)
