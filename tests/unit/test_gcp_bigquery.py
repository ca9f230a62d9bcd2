"""What the BigQuery adapter sends Google (against the stand-in of ``bigquery.Client``,
tests/contract/bigquery_stand_in.py): the GoogleSQL and typed parameters of a query, the table
schemas and partitioning it creates, its streaming inserts with insertIds, queries by partition,
and the tables a BigQuery subscription writes (``use_topic_schema``: the archive decoded)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hcl2
import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from meridian.domain.errors import NotFound, Unavailable, ValidationError
from meridian.gcp.bigquery import (
    BigQueryWarehouse,
    avro_field,
    subscription_table_schema,
    to_bigquery_sql,
)
from tests.contract.bigquery_stand_in import StubBigQuery

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "meridian-prod"
T0 = datetime(2026, 11, 21, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def google() -> StubBigQuery:
    return StubBigQuery(PROJECT)


@pytest.fixture
def warehouse(google: StubBigQuery) -> BigQueryWarehouse:
    return BigQueryWarehouse(PROJECT, client=google)


def sent(google: StubBigQuery, method: str) -> list[Any]:
    return [body for name, body in google.requests if name == method]


# queries ---------------------------------------------------------------------------------------


def test_dollar_placeholders_become_typed_named_parameters() -> None:
    sql, parameters = to_bigquery_sql(
        "SELECT * FROM telemetry.raw_pings WHERE vehicle_id = $vehicle AND n > $n"
        " AND speed < $speed AND ok = $ok AND data = $data AND publish_time >= $since"
        " AND note = '$not_a_parameter'",
        {
            "vehicle": "v1",
            "n": 3,
            "speed": 2.5,
            "ok": True,
            "data": b"\x00",
            "since": datetime(2026, 11, 21, 9, 30),  # naive: UTC
            "unused": 1,
        },
    )

    assert sql == (
        "SELECT * FROM telemetry.raw_pings WHERE vehicle_id = @vehicle AND n > @n"
        " AND speed < @speed AND ok = @ok AND data = @data AND publish_time >= @since"
        " AND note = '$not_a_parameter'"
    )
    assert parameters == [
        bigquery.ScalarQueryParameter("vehicle", "STRING", "v1"),
        bigquery.ScalarQueryParameter("n", "INT64", 3),
        bigquery.ScalarQueryParameter("speed", "FLOAT64", 2.5),
        bigquery.ScalarQueryParameter("ok", "BOOL", True),
        bigquery.ScalarQueryParameter("data", "BYTES", b"\x00"),
        bigquery.ScalarQueryParameter(
            "since", "TIMESTAMP", datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
        ),
    ]


def test_a_query_is_one_job_with_its_parameters(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    warehouse.append_rows("telemetry.pings", [{"vehicle": "v1", "publish_time": T0}])

    rows = warehouse.query("SELECT vehicle FROM telemetry.pings WHERE vehicle = $v", {"v": "v1"})

    assert rows == [{"vehicle": "v1"}]
    [(sql, parameters)] = sent(google, "query")
    assert sql == "SELECT vehicle FROM telemetry.pings WHERE vehicle = @v"
    assert parameters == [bigquery.ScalarQueryParameter("v", "STRING", "v1")]


def test_a_missing_parameter_is_refused_before_anything_is_sent(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    with pytest.raises(ValidationError, match=r"\$missing"):
        warehouse.query("SELECT 1 FROM telemetry.pings WHERE n = $missing", {})
    assert sent(google, "query") == []


def test_google_errors_become_the_cores(warehouse: BigQueryWarehouse, google: StubBigQuery) -> None:
    with pytest.raises(NotFound):
        warehouse.query("SELECT * FROM telemetry.never")

    def unavailable(*_: Any, **__: Any) -> Any:
        raise gexc.ServiceUnavailable("try later")

    google.query = unavailable  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        warehouse.query("SELECT 1")


# schemas and streaming inserts -----------------------------------------------------------------


def test_the_first_append_creates_the_table_typed_and_day_partitioned_on_publish_time(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    warehouse.append_rows(
        "facts.all_types",
        [
            {
                "text": "é",
                "count": 7,
                "ratio": 2.5,
                "flag": True,
                "blob": b"\x00\xff",
                "nothing": None,
                "publish_time": T0,
            },
            {"nothing": "later"},
        ],
    )

    assert sent(google, "create_dataset") == [f"{PROJECT}.facts"]
    [table] = sent(google, "create_table")
    assert (table.project, table.dataset_id, table.table_id) == (PROJECT, "facts", "all_types")
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        ("text", "STRING", "NULLABLE"),
        ("count", "INTEGER", "NULLABLE"),
        ("ratio", "FLOAT", "NULLABLE"),
        ("flag", "BOOLEAN", "NULLABLE"),
        ("blob", "BYTES", "NULLABLE"),
        ("publish_time", "TIMESTAMP", "NULLABLE"),
        ("nothing", "STRING", "NULLABLE"),  # typed by its first value that is not None
    ]
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field == "publish_time"


def test_rows_without_publish_time_go_to_ingestion_time_partitions(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    warehouse.append_rows("facts.counts", [{"n": 1}])
    [table] = sent(google, "create_table")
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field is None  # _PARTITIONTIME, the day of the insert


def test_new_columns_are_added_nullable_to_the_existing_schema(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    warehouse.append_rows("facts.notes", [{"id": 1}])
    warehouse.append_rows("facts.notes", [{"id": 2}])
    warehouse.append_rows("facts.notes", [{"id": 3, "note": "new"}])

    [(table, fields)] = sent(google, "update_table")
    assert fields == ("schema",)
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        ("id", "INTEGER", "NULLABLE"),
        ("note", "STRING", "NULLABLE"),
    ]


def test_streaming_inserts_send_json_rows_with_insert_ids(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    row = {"message_id": "m-1", "data": b"\x01\x02", "publish_time": datetime(2026, 11, 21, 9, 30)}

    warehouse.append_rows("telemetry.raw", [row])
    warehouse.append_rows("telemetry.raw", [row, {**row, "message_id": "m-2"}])  # a redelivery

    first, second = sent(google, "insert_rows_json")
    assert first == (
        f"{PROJECT}.telemetry.raw",
        [{"message_id": "m-1", "data": "AQI=", "publish_time": "2026-11-21T09:30:00+00:00"}],
        ["m-1"],
    )
    assert second[2] == ["m-1", "m-2"]
    # BigQuery drops the row whose insertId it has seen: m-1 is stored once.
    assert warehouse.query("SELECT message_id FROM telemetry.raw ORDER BY message_id") == [
        {"message_id": "m-1"},
        {"message_id": "m-2"},
    ]


def test_rows_without_a_message_id_get_distinct_insert_ids(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    warehouse.append_rows("facts.counts", [{"n": 1}, {"n": 1}])
    [(_, _, ids)] = sent(google, "insert_rows_json")
    assert len(set(ids)) == 2
    assert warehouse.query("SELECT COUNT(*) AS n FROM facts.counts") == [{"n": 2}]


def test_an_append_of_known_columns_does_not_read_the_table_again(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    warehouse.append_rows("facts.counts", [{"n": 1}])
    warehouse.append_rows("facts.counts", [{"n": 2}])
    assert len(sent(google, "get_table")) == 1
    assert len(sent(google, "insert_rows_json")) == 2


def test_rows_bigquery_refuses_are_a_validation_error(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    warehouse.append_rows("facts.counts", [{"n": 1}])
    google.tables[f"{PROJECT}.facts.counts"].table.schema = []  # changed behind the adapter
    with pytest.raises(ValidationError, match="no such field: n"):
        warehouse.append_rows("facts.counts", [{"n": 2}])


# the archive: a BigQuery subscription's table --------------------------------------------------


def _terraform_columns() -> list[tuple[str, str, str]]:
    parsed = hcl2.loads((ROOT / "terraform/modules/pubsub/bigquery.tf").read_text())
    local = parsed["locals"][0]
    return [
        (c["name"].strip('"'), c["type"].strip('"'), c["mode"].strip('"'))
        for c in [*local["data_column"], *local["metadata_columns"]]
    ]


def test_the_raw_table_matches_the_one_terraform_creates() -> None:
    schema = subscription_table_schema(None, write_metadata=True, use_topic_schema=False)
    assert [(f.name, f.field_type, f.mode) for f in schema] == _terraform_columns()


def _vehicle_ping() -> dict[str, Any]:
    return json.loads((ROOT / "schemas/avro/VehiclePing.avsc").read_text())


def test_use_topic_schema_decodes_the_avro_fields_into_columns() -> None:
    schema = subscription_table_schema(_vehicle_ping(), write_metadata=True, use_topic_schema=True)

    assert [(f.name, f.field_type, f.mode) for f in schema] == [
        ("event_id", "STRING", "REQUIRED"),
        ("occurred_at", "TIMESTAMP", "REQUIRED"),
        ("vehicle_id", "STRING", "REQUIRED"),
        ("driver_id", "STRING", "NULLABLE"),
        ("lat", "FLOAT", "REQUIRED"),
        ("lng", "FLOAT", "REQUIRED"),
        ("heading_deg", "FLOAT", "NULLABLE"),
        ("speed_mps", "FLOAT", "NULLABLE"),
        ("accuracy_m", "FLOAT", "NULLABLE"),
        ("recorded_at", "TIMESTAMP", "REQUIRED"),
        ("subscription_name", "STRING", "NULLABLE"),
        ("message_id", "STRING", "NULLABLE"),
        ("publish_time", "TIMESTAMP", "NULLABLE"),
        ("attributes", "JSON", "NULLABLE"),
    ]
    with pytest.raises(ValidationError):
        subscription_table_schema(None, write_metadata=True, use_topic_schema=True)


def test_avro_types_map_as_pubsub_writes_them() -> None:
    record = {"type": "record", "name": "Stop", "fields": [{"name": "seq", "type": "int"}]}
    fields = {
        "stops": {"type": "array", "items": record},
        "tags": {"type": "map", "values": "string"},
        "kind": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]},
        "day": {"type": "int", "logicalType": "date"},
        "ok": ["null", "boolean"],
    }
    mapped = {name: avro_field(name, avro) for name, avro in fields.items()}

    assert (mapped["stops"].field_type, mapped["stops"].mode) == ("RECORD", "REPEATED")
    assert [(f.name, f.field_type) for f in mapped["stops"].fields] == [("seq", "INTEGER")]
    assert (mapped["tags"].field_type, mapped["tags"].mode) == ("RECORD", "REPEATED")
    assert [(f.name, f.field_type) for f in mapped["tags"].fields] == [
        ("key", "STRING"),
        ("value", "STRING"),
    ]
    assert mapped["kind"].field_type == "STRING"
    assert mapped["day"].field_type == "DATE"
    assert (mapped["ok"].field_type, mapped["ok"].mode) == ("BOOLEAN", "NULLABLE")
    with pytest.raises(ValidationError):
        avro_field("either", ["string", "long"])


def _archive(google: StubBigQuery, schema: list[bigquery.SchemaField]) -> None:
    # The table as terraform/modules/pubsub/bigquery.tf creates it: day partitions on
    # publish_time, and queries must filter on them.
    google.create_dataset(f"{PROJECT}.telemetry")
    table = bigquery.Table(f"{PROJECT}.telemetry.raw_pings", schema=schema)
    table.time_partitioning = bigquery.TimePartitioning(type_="DAY", field="publish_time")
    table.require_partition_filter = True
    google.create_table(table)


def test_the_archive_is_queried_by_partition(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    _archive(google, subscription_table_schema(None, write_metadata=True, use_topic_schema=False))
    google.insert_rows_json(
        f"{PROJECT}.telemetry.raw_pings",
        [
            {
                "message_id": "m-1",
                "data": "AQI=",
                "attributes": '{"vehicleId":"v1"}',
                "publish_time": T0.isoformat(),
            }
        ],
    )

    # The geofence job's archive read (pipelines/geofence/source.py ReadArchive).
    rows = warehouse.query(
        "SELECT ANY_VALUE(data) AS data, ANY_VALUE(attributes) AS attributes"
        " FROM telemetry.raw_pings WHERE publish_time >= $start AND publish_time < $end"
        " GROUP BY message_id",
        {"start": datetime(2026, 11, 21), "end": datetime(2026, 11, 22)},
    )

    assert rows == [{"data": b"\x01\x02", "attributes": '{"vehicleId":"v1"}'}]
    [(_, parameters)] = sent(google, "query")
    assert [(p.name, p.type_) for p in parameters] == [("start", "TIMESTAMP"), ("end", "TIMESTAMP")]
    with pytest.raises(ValidationError, match="without a filter over column"):
        warehouse.query("SELECT COUNT(*) AS n FROM telemetry.raw_pings")


def test_the_decoded_archive_is_queryable_in_sql(
    warehouse: BigQueryWarehouse, google: StubBigQuery
) -> None:
    _archive(
        google,
        subscription_table_schema(_vehicle_ping(), write_metadata=True, use_topic_schema=True),
    )
    # What Pub/Sub writes for a VehiclePing with use_topic_schema: its fields, decoded.
    google.insert_rows_json(
        f"{PROJECT}.telemetry.raw_pings",
        [
            {
                "event_id": "e-1",
                "occurred_at": T0.isoformat(),
                "vehicle_id": "v1",
                "lat": 52.5,
                "lng": 13.4,
                "recorded_at": T0.isoformat(),
                "message_id": "m-1",
                "publish_time": T0.isoformat(),
            },
        ],
    )

    rows = warehouse.query(
        "SELECT vehicle_id, lat, recorded_at FROM telemetry.raw_pings"
        " WHERE publish_time >= $since AND vehicle_id = $vehicle",
        {"since": datetime(2026, 11, 21), "vehicle": "v1"},
    )

    assert rows == [{"vehicle_id": "v1", "lat": 52.5, "recorded_at": T0}]


# wiring ----------------------------------------------------------------------------------------


def test_the_backend_chooses_the_warehouse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from meridian import adapters
    from meridian.config import Settings
    from meridian.embedded.warehouse import EmbeddedWarehouse
    from meridian.gcp import bigquery as gcp_bigquery

    built: list[str] = []
    monkeypatch.setattr(
        gcp_bigquery.bigquery, "Client", lambda project, location=None: built.append(project)
    )

    gcp = adapters.warehouse(Settings(backend="gcp", project=PROJECT))
    local = adapters.warehouse(Settings(data_dir=tmp_path))

    assert isinstance(gcp, BigQueryWarehouse) and gcp.project == PROJECT
    assert built == [PROJECT]
    assert isinstance(local, EmbeddedWarehouse) and local.root == tmp_path / "warehouse"
