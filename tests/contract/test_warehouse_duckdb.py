"""The Warehouse contract on the embedded adapter (DuckDB over day-partitioned Parquet files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.ports import Warehouse

from .warehouse_contract import DAY_1, DAY_2, WarehouseContract


class TestEmbeddedWarehouse(WarehouseContract):
    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path

    def make_warehouse(self) -> Warehouse:
        return EmbeddedWarehouse(self.data_dir)


def test_each_day_is_a_directory_of_its_own(tmp_path: Path) -> None:
    # How the embedded adapter partitions (the contract sees only the rows).
    EmbeddedWarehouse(tmp_path).append_rows(
        "telemetry.raw", [{"publish_time": DAY_1}, {"publish_time": DAY_2}]
    )
    days = sorted(p.name for p in (tmp_path / "warehouse" / "telemetry" / "raw").iterdir())
    assert days == ["day=2026-11-20", "day=2026-11-21"]
