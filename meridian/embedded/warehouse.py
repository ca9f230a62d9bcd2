"""The embedded warehouse (BigQuery's role): DuckDB over day-partitioned Parquet files.

A table ``dataset.table`` is the directory ``<data dir>/warehouse/dataset/table/`` holding
``day=YYYY-MM-DD/part-*.parquet`` files, partitioned on the row's ``publish_time`` (or the time of
the append when a row has none). Each append writes a new file under a temporary name and renames
it, so readers in other processes never see half a file and no lock is needed. Queries name
tables as ``dataset.table``; each query opens a fresh in-memory DuckDB with one view per table
(the ``day=`` directories are not read as a column: a BigQuery table has none). Timestamps are
stored as UTC without a zone and handed back zone-aware, in UTC, as BigQuery's client does.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from meridian.domain.errors import NotFound, ValidationError
from meridian.ports import Warehouse, check_table_name

PARTITION_COLUMN = "publish_time"


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EmbeddedWarehouse(Warehouse):
    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir) / "warehouse"

    def append_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        check_table_name(table)
        if not rows:
            return
        by_day: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        now = datetime.now(UTC)
        for row in rows:
            stamp = row.get(PARTITION_COLUMN)
            when = stamp if isinstance(stamp, datetime) else now
            by_day[_utc(when).date().isoformat()].append(_naive_utc(row))
        dataset, name = table.split(".")
        for day, day_rows in by_day.items():
            directory = self.root / dataset / name / f"day={day}"
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = directory / f".{final.name}.tmp"
            pq.write_table(pa.Table.from_pylist(list(day_rows)), tmp)
            os.replace(tmp, final)

    def tables(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            f"{d.name}.{t.name}"
            for d in self.root.iterdir()
            if d.is_dir()
            for t in d.iterdir()
            if t.is_dir() and any(t.glob("day=*/*.parquet"))
        )

    def json_text(self, column: str, key: str) -> str:
        if not (_IDENTIFIER.match(column) and _IDENTIFIER.match(key)):
            raise ValidationError(f"not a column and key: {column!r}, {key!r}")
        return f"json_extract_string({column}, '$.{key}')"

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run DuckDB SQL; parameters are named ``$name``. Unknown tables raise NotFound, SQL
        DuckDB refuses ValidationError."""
        db = duckdb.connect(":memory:")
        try:
            for table in self.tables():
                dataset, name = table.split(".")
                files = str(self.root / dataset / name / "day=*" / "*.parquet")
                db.execute(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')
                db.execute(
                    f'CREATE VIEW "{dataset}"."{name}" AS SELECT * FROM read_parquet('
                    f"'{files}', hive_partitioning = false, union_by_name = true)"
                )
            try:
                result = db.execute(sql, _naive_utc(parameters or {}))
            except duckdb.CatalogException as e:
                if "Table with name" in str(e):
                    raise NotFound(f"warehouse: {e}") from None
                raise ValidationError(f"warehouse: {e}") from None
            except (duckdb.ProgrammingError, duckdb.DataError) as e:
                raise ValidationError(f"warehouse: {e}") from None
            description = result.description or []
            columns = [c[0] for c in description]
            rows = [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
            # Only the timestamp columns are walked: most queries (the archive's) have none.
            stamped = [c[0] for c in description if str(c[1]) == "TIMESTAMP"]
            for row in rows:
                for column in stamped:
                    if row[column] is not None:
                        row[column] = row[column].replace(tzinfo=UTC)
            return rows
        finally:
            db.close()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _naive_utc(row: Mapping[str, Any]) -> dict[str, Any]:
    # Timestamps are stored as UTC without a zone, like BigQuery's TIMESTAMP; zone-aware Arrow
    # columns would make DuckDB need pytz to read them back.
    return {
        k: _utc(v).replace(tzinfo=None) if isinstance(v, datetime) else v for k, v in row.items()
    }
