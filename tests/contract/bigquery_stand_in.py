"""A stand-in for Google's ``bigquery.Client`` at its method boundary (no network; BigQuery has
no emulator), used by the BigQuery adapter's unit tests (tests/unit/test_gcp_bigquery.py) and its
run of the Warehouse contract (tests/contract/test_warehouse_bigquery.py).

It implements only the calls the adapter makes and keeps what BigQuery would: tables with their
schema and partitioning, streamed rows (decoded from the JSON ``insertAll`` takes, deduplicated
on insertId), and queries, run by DuckDB over those rows with the named ``@parameters`` of the
job's ``ScalarQueryParameter``s. Every request is recorded for the unit tests to pin. Errors are
Google's: NotFound for a missing table, BadRequest for SQL refused, as BigQuery answers them.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb
from google.api_core import exceptions as gexc
from google.cloud import bigquery

_DUCK_TYPES = {
    "BOOLEAN": "BOOLEAN",
    "INTEGER": "BIGINT",
    "FLOAT": "DOUBLE",
    "STRING": "VARCHAR",
    "BYTES": "BLOB",
    "TIMESTAMP": "TIMESTAMP",
    "DATE": "DATE",
    "JSON": "VARCHAR",
}
_PARAMETER = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|@([A-Za-z_][A-Za-z0-9_]*)""")


@dataclass
class StoredTable:
    table: bigquery.Table
    rows: list[dict[str, Any]] = field(default_factory=list)
    insert_ids: set[str] = field(default_factory=set)


class _Job:
    def __init__(self, rows: list[bigquery.table.Row]) -> None:
        self._rows = rows

    def result(self) -> list[bigquery.table.Row]:
        return self._rows


class StubBigQuery:
    """Stands in for ``bigquery.Client``; tables are keyed ``project.dataset.table``."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.datasets: set[str] = set()
        self.tables: dict[str, StoredTable] = {}
        self.requests: list[tuple[str, Any]] = []

    # tables ----------------------------------------------------------------------------------

    def create_dataset(self, dataset: str, exists_ok: bool = False) -> None:
        self.requests.append(("create_dataset", dataset))
        if dataset in self.datasets and not exists_ok:
            raise gexc.Conflict(f"Already Exists: Dataset {dataset}")
        self.datasets.add(dataset)

    def get_table(self, table_id: str) -> bigquery.Table:
        self.requests.append(("get_table", table_id))
        return copy.deepcopy(self._stored(table_id).table)

    def create_table(self, table: bigquery.Table, exists_ok: bool = False) -> bigquery.Table:
        self.requests.append(("create_table", table))
        table_id = f"{table.project}.{table.dataset_id}.{table.table_id}"
        if table_id in self.tables:
            if not exists_ok:
                raise gexc.Conflict(f"Already Exists: Table {table_id}")
            return self.tables[table_id].table
        if f"{table.project}.{table.dataset_id}" not in self.datasets:
            raise gexc.NotFound(f"Not found: Dataset {table.project}:{table.dataset_id}")
        self.tables[table_id] = StoredTable(copy.deepcopy(table))
        return table

    def update_table(self, table: bigquery.Table, fields: Sequence[str]) -> bigquery.Table:
        self.requests.append(("update_table", (table, tuple(fields))))
        stored = self._stored(f"{table.project}.{table.dataset_id}.{table.table_id}")
        before = {f.name: f for f in stored.table.schema}
        for f in table.schema:
            if f.name in before and before[f.name].field_type != f.field_type:
                raise gexc.BadRequest(f"Provided Schema does not match Table: field {f.name}")
            if f.name not in before and f.mode == "REQUIRED":
                raise gexc.BadRequest(f"Cannot add required field {f.name} to an existing schema")
        stored.table.schema = list(table.schema)
        return table

    def _stored(self, table_id: str) -> StoredTable:
        if table_id not in self.tables:
            project, dataset, name = table_id.split(".")
            raise gexc.NotFound(f"Not found: Table {project}:{dataset}.{name}")
        return self.tables[table_id]

    # streaming inserts -----------------------------------------------------------------------

    def insert_rows_json(
        self,
        table: str,
        json_rows: Sequence[Mapping[str, Any]],
        row_ids: Iterable[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        ids = list(row_ids) if row_ids is not None else [None] * len(json_rows)
        self.requests.append(("insert_rows_json", (table, list(json_rows), ids)))
        stored = self._stored(table)
        types = {f.name: f.field_type for f in stored.table.schema}
        errors = [
            {"index": i, "errors": [{"reason": "invalid", "message": f"no such field: {name}."}]}
            for i, row in enumerate(json_rows)
            for name in row
            if name not in types
        ]
        if errors:  # insertAll refuses the whole request when a row is invalid
            return errors
        for row, insert_id in zip(json_rows, ids, strict=True):
            if insert_id is not None and insert_id in stored.insert_ids:
                continue  # best-effort deduplication, as BigQuery does on insertId
            if insert_id is not None:
                stored.insert_ids.add(insert_id)
            stored.rows.append({k: _decode(types[k], v) for k, v in row.items()})
        return []

    # queries ---------------------------------------------------------------------------------

    def query(self, query: str, job_config: bigquery.QueryJobConfig | None = None) -> _Job:
        parameters = list(job_config.query_parameters) if job_config is not None else []
        self.requests.append(("query", (query, parameters)))
        values = {p.name: _naive(p.value) for p in parameters}
        self._check_partition_filters(query)
        db = duckdb.connect(":memory:")
        try:
            for table_id, stored in self.tables.items():
                self._load(db, table_id, stored)
            sql = _PARAMETER.sub(lambda m: f"${m[1]}" if m[1] else m[0], query)
            # GoogleSQL's JSON_VALUE gives the scalar as a string; DuckDB's gives it as JSON
            # (quoted), and its json_extract_string is the GoogleSQL one.
            sql = re.sub(r"\bJSON_VALUE\(", "json_extract_string(", sql)
            try:
                result = db.execute(sql, values)
            except duckdb.CatalogException as e:
                if "Table with name" in str(e):
                    raise gexc.NotFound(f"Not found: Table {e}") from None
                raise gexc.BadRequest(str(e)) from None
            except (duckdb.ParserException, duckdb.BinderException, duckdb.Error) as e:
                raise gexc.BadRequest(str(e)) from None
            description = result.description or []
            names = [c[0] for c in description]
            stamped = {c[0] for c in description if str(c[1]) == "TIMESTAMP"}
            index = {name: i for i, name in enumerate(names)}
            return _Job(
                [
                    bigquery.table.Row(
                        [
                            v.replace(tzinfo=UTC) if n in stamped and v is not None else v
                            for n, v in zip(names, row, strict=True)
                        ],
                        index,
                    )
                    for row in result.fetchall()
                ]
            )
        finally:
            db.close()

    def _check_partition_filters(self, query: str) -> None:
        # A table created with require_partition_filter refuses a query with no filter on its
        # partition column, as BigQuery does (the archive table of terraform/modules/pubsub).
        for table_id, stored in self.tables.items():
            partitioning = stored.table.time_partitioning
            if partitioning is None or not stored.table.require_partition_filter:
                continue
            name = table_id.split(".", 1)[1]
            column = partitioning.field or "_PARTITIONTIME"
            where = query.split("WHERE", 1)[1] if "WHERE" in query else ""
            if name in query and column not in where:
                raise gexc.BadRequest(
                    f"Cannot query over table '{table_id}' without a filter over column(s) "
                    f"'{column}' that can be used for partition elimination"
                )

    @staticmethod
    def _load(db: duckdb.DuckDBPyConnection, table_id: str, stored: StoredTable) -> None:
        _, dataset, name = table_id.split(".")
        columns = [(f.name, _DUCK_TYPES[f.field_type]) for f in stored.table.schema]
        db.execute(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')
        db.execute(
            f'CREATE TABLE "{dataset}"."{name}" ('
            + ", ".join(f'"{c}" {t}' for c, t in columns)
            + ")"
        )
        if stored.rows:
            marks = ", ".join("?" for _ in columns)
            db.executemany(
                f'INSERT INTO "{dataset}"."{name}" VALUES ({marks})',
                [[_naive(row.get(c)) for c, _ in columns] for row in stored.rows],
            )


def _decode(kind: str, value: Any) -> Any:
    """A JSON value of ``insertAll`` as BigQuery stores it."""
    if value is None:
        return None
    if kind == "TIMESTAMP":
        return datetime.fromisoformat(value).astimezone(UTC)
    if kind == "DATE":
        return date.fromisoformat(value)
    if kind == "BYTES":
        return base64.b64decode(value)
    return value


def _naive(value: Any) -> Any:
    # DuckDB's TIMESTAMP holds UTC without a zone, as BigQuery's does.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return value
