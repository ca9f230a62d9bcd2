"""The Warehouse on BigQuery (``google-cloud-bigquery``).

Appends are streaming inserts (``insert_rows_json``), readable by queries as soon as they return;
each row carries an insertId, its ``message_id`` when it has one (a message appended again after
a redelivery is the same row, which BigQuery drops as a duplicate within about a minute), else a
random id the client reuses on its own retries. A table is created on its first append, with
the columns of its rows, day-partitioned on ``publish_time`` when they have it and by ingestion
time (``_PARTITIONTIME``) when not, as ``terraform/modules/pubsub/bigquery.tf`` creates the
BigQuery subscriptions' tables; a later append that brings new columns adds them, NULLABLE. The
adapter remembers the columns it has seen per table, so an append of known columns is one call.
Rows with no ``publish_time`` in a table partitioned on it land in BigQuery's NULL partition.

Queries are GoogleSQL: the port's ``$name`` placeholders become ``@name`` with a typed
``ScalarQueryParameter`` each, and ``dataset.table`` names resolve in the client's project.
Google's errors become the core's: a missing table NotFound, SQL BigQuery refuses
ValidationError, an unreachable service Unavailable.

``subscription_table_schema`` is the table a BigQuery subscription writes: ``data`` (the Avro
bytes) and the message metadata, or, with ``use_topic_schema``, one column per field of the
topic's Avro schema, decoded by Pub/Sub (the raw archive queryable in SQL).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from meridian.domain.errors import NotFound, Unavailable, ValidationError
from meridian.ports import Warehouse, check_table_name

PARTITION_COLUMN = "publish_time"

# Quoted text and comments are skipped, so a '$' inside a string literal stays as written.
_PLACEHOLDER = re.compile(
    r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`|--[^\n]*|\$([A-Za-z_][A-Za-z0-9_]*)"""
)


# Python values → BigQuery column types (table schemas) and query parameter types.
def column_type(value: Any) -> str:
    """The BigQuery column type of an appended value (bool before int: a bool is an int)."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "FLOAT"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes | bytearray | memoryview):
        return "BYTES"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    if isinstance(value, date):
        return "DATE"
    raise ValidationError(f"a warehouse row cannot hold {type(value).__name__} values")


_PARAMETER_TYPES = {
    "BOOLEAN": "BOOL",
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "STRING": "STRING",
    "BYTES": "BYTES",
    "TIMESTAMP": "TIMESTAMP",
    "DATE": "DATE",
}


def query_parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter:
    """``value`` as a typed named parameter (naive datetimes are UTC; None is a NULL STRING)."""
    if value is None:
        return bigquery.ScalarQueryParameter(name, "STRING", None)
    kind = _PARAMETER_TYPES[column_type(value)]
    if isinstance(value, datetime):
        value = _utc(value)
    return bigquery.ScalarQueryParameter(name, kind, value)


def to_bigquery_sql(sql: str, parameters: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """The port's SQL with ``$name`` → ``@name`` and the parameters it uses, typed; a
    placeholder with no value is a ValidationError (as BigQuery would answer, without the
    round trip)."""
    given = parameters or {}
    used: dict[str, Any] = {}

    def rewrite(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)
        if name not in given:
            raise ValidationError(f"warehouse: no value for query parameter ${name}")
        used[name] = query_parameter(name, given[name])
        return f"@{name}"

    return _PLACEHOLDER.sub(rewrite, sql), list(used.values())


# BigQuery subscriptions' tables --------------------------------------------------------------

# What a BigQuery subscription with write_metadata adds (terraform/modules/pubsub/bigquery.tf).
METADATA_COLUMNS = (
    bigquery.SchemaField("subscription_name", "STRING"),
    bigquery.SchemaField("message_id", "STRING"),
    bigquery.SchemaField(PARTITION_COLUMN, "TIMESTAMP"),
    bigquery.SchemaField("attributes", "JSON"),
)
DATA_COLUMN = bigquery.SchemaField("data", "BYTES", description="Avro-encoded message body")

# Avro → BigQuery as Pub/Sub writes a topic's decoded messages (use_topic_schema).
_AVRO_PRIMITIVES = {
    "boolean": "BOOLEAN",
    "int": "INTEGER",
    "long": "INTEGER",
    "float": "FLOAT",
    "double": "FLOAT",
    "bytes": "BYTES",
    "string": "STRING",
    "enum": "STRING",
}
_AVRO_LOGICAL = {
    "timestamp-micros": "TIMESTAMP",
    "timestamp-millis": "TIMESTAMP",
    "date": "DATE",
    "time-micros": "TIME",
    "time-millis": "TIME",
    "decimal": "NUMERIC",
}


def avro_field(name: str, avro_type: Any, mode: str = "REQUIRED") -> bigquery.SchemaField:
    """The column Pub/Sub writes an Avro field of ``avro_type`` to: a union with null is
    NULLABLE, an array REPEATED, a record a RECORD of its fields, a map a REPEATED RECORD of
    key and value; logical types take their BigQuery type (timestamp-micros is TIMESTAMP)."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            raise ValidationError(f"Avro field {name}: only unions of null and one type map")
        return avro_field(name, branches[0], "NULLABLE" if "null" in avro_type else mode)
    if isinstance(avro_type, str):
        if avro_type not in _AVRO_PRIMITIVES:
            raise ValidationError(f"Avro field {name}: type {avro_type!r} has no column type")
        return bigquery.SchemaField(name, _AVRO_PRIMITIVES[avro_type], mode=mode)
    kind = avro_type.get("type")
    logical = avro_type.get("logicalType")
    if logical in _AVRO_LOGICAL:
        return bigquery.SchemaField(name, _AVRO_LOGICAL[logical], mode=mode)
    if kind == "record":
        return bigquery.SchemaField(name, "RECORD", mode=mode, fields=avro_fields(avro_type))
    if kind == "array":
        item = avro_field(name, avro_type["items"])
        return bigquery.SchemaField(name, item.field_type, mode="REPEATED", fields=item.fields)
    if kind == "map":
        entry = (
            bigquery.SchemaField("key", "STRING", mode="REQUIRED"),
            avro_field("value", avro_type["values"]),
        )
        return bigquery.SchemaField(name, "RECORD", mode="REPEATED", fields=entry)
    return avro_field(name, kind, mode)


def avro_fields(record: Mapping[str, Any]) -> tuple[bigquery.SchemaField, ...]:
    return tuple(avro_field(f["name"], f["type"]) for f in record["fields"])


def subscription_table_schema(
    topic_schema: Mapping[str, Any] | None, *, write_metadata: bool, use_topic_schema: bool
) -> list[bigquery.SchemaField]:
    """The columns of a BigQuery subscription's table: the topic's Avro fields decoded
    (``use_topic_schema``, which needs ``topic_schema``) or ``data``; then, with
    ``write_metadata``, the message metadata."""
    if use_topic_schema:
        if topic_schema is None:
            raise ValidationError("use_topic_schema needs the topic's Avro schema")
        body = list(avro_fields(topic_schema))
    else:
        body = [DATA_COLUMN]
    return body + (list(METADATA_COLUMNS) if write_metadata else [])


# The adapter ---------------------------------------------------------------------------------


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BigQueryWarehouse(Warehouse):
    """``client``: a ``bigquery.Client`` (built for ``project`` if None; tests pass a stand-in)."""

    def __init__(self, project: str, *, client: Any = None, location: str | None = None) -> None:
        self.project = project
        self.client = client or bigquery.Client(project=project, location=location)
        # The columns each table is known to have: an append of known columns goes straight to
        # insertAll, without first reading the table (one round trip instead of two).
        self._columns: dict[str, set[str]] = {}

    def _table_id(self, table: str) -> str:
        return f"{self.project}.{table}"

    def append_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        check_table_name(table)
        if not rows:
            return
        columns = _columns_of(rows)
        with _translated():
            if not columns.keys() <= self._columns.get(table, set()):
                self._ensure_table(table, columns)
                self._columns.setdefault(table, set()).update(columns)
            errors = self.client.insert_rows_json(
                self._table_id(table),
                [_json_row(row) for row in rows],
                row_ids=[_insert_id(row) for row in rows],
            )
        if errors:
            raise ValidationError(f"BigQuery refused rows of {table}: {errors}")

    def _ensure_table(self, table: str, columns: Mapping[str, str]) -> None:
        """Create ``table`` with ``columns``, or add those it lacks (NULLABLE)."""
        try:
            existing = self.client.get_table(self._table_id(table))
        except gexc.NotFound:
            dataset = table.split(".")[0]
            self.client.create_dataset(f"{self.project}.{dataset}", exists_ok=True)
            created = bigquery.Table(
                self._table_id(table),
                schema=[bigquery.SchemaField(n, t) for n, t in columns.items()],
            )
            created.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY,
                field=PARTITION_COLUMN if PARTITION_COLUMN in columns else None,
            )
            self.client.create_table(created, exists_ok=True)
            return
        known = {f.name for f in existing.schema}
        added = [bigquery.SchemaField(n, t) for n, t in columns.items() if n not in known]
        if added:
            existing.schema = [*existing.schema, *added]
            self.client.update_table(existing, ["schema"])

    def json_text(self, column: str, key: str) -> str:
        if not (_IDENTIFIER.match(column) and _IDENTIFIER.match(key)):
            raise ValidationError(f"not a column and key: {column!r}, {key!r}")
        return f"JSON_VALUE({column}, '$.{key}')"

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        text, typed = to_bigquery_sql(sql, parameters)
        config = bigquery.QueryJobConfig(query_parameters=typed)
        with _translated():
            result = self.client.query(text, job_config=config).result()
            return [dict(row.items()) for row in result]


def _columns_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each column's type, from its first non-None value (STRING for a column of Nones)."""
    columns: dict[str, str] = {}
    for row in rows:
        for name, value in row.items():
            if value is not None and name not in columns:
                columns[name] = column_type(value)
    for row in rows:
        for name in row:
            columns.setdefault(name, "STRING")
    return columns


def _json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the JSON ``insertAll`` takes: timestamps as RFC 3339 in UTC, bytes base64."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, datetime):
            out[name] = _utc(value).isoformat()
        elif isinstance(value, date):
            out[name] = value.isoformat()
        elif isinstance(value, bytes | bytearray | memoryview):
            out[name] = base64.b64encode(bytes(value)).decode("ascii")
        else:
            out[name] = value
    return out


def _insert_id(row: Mapping[str, Any]) -> str:
    message_id = row.get("message_id")
    return str(message_id) if message_id else uuid.uuid4().hex


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def _translated() -> Iterator[None]:
    """Google's exceptions → the core's, at the boundary."""
    try:
        yield
    except gexc.NotFound as e:
        raise NotFound(f"warehouse: {e.message}") from e
    except gexc.BadRequest as e:
        raise ValidationError(f"warehouse: {e.message}") from e
    except (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.TooManyRequests,
        gexc.InternalServerError,
    ) as e:
        raise Unavailable(f"BigQuery unavailable: {e.message}") from e
