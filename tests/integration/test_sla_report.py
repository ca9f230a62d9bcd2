"""The SLA report of a simulated day on the embedded warehouse (DuckDB): 2,000 parcels of two
clients go out on routes, most delivered on time, some late, some after a failed first attempt,
some never; their events are built with the domain model, archived in the BigQuery subscription's
table shape, and the report's figures are checked against a hand count of the same plan.

The same day through the BigQuery adapter (``meridian/gcp/bigquery.py`` over the stand-in of
Google's client, ``tests/contract/bigquery_stand_in.py``: the archive table as Terraform creates
it, ``@name`` typed parameters, the SQL run by DuckDB) gives the same figures; and since DuckDB
accepts SQL that BigQuery refuses, every query the report issues there is also checked against
GoogleSQL's lexical rules (``BIGQUERY_RULES``)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from meridian.app.sla_report import CAUSES_SQL, DAILY_SQL, SlaReport, sla_report
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.gcp.bigquery import (
    PARTITION_COLUMN,
    BigQueryWarehouse,
    subscription_table_schema,
)
from meridian.ports import Warehouse
from meridian.runtime.report_cli import as_csv, as_html
from tests.contract.bigquery_stand_in import StubBigQuery

DAY = date(2026, 11, 21)
ARCHIVE = "events.logistics_events"
CODEC = EventCodec(load_catalog())


@dataclass
class Plan:
    parcel_id: str
    client_id: str
    window_end: datetime
    eta: datetime  # first announced
    outcome: str  # on_time, late, failed_then_on_time, failed_then_late, undelivered
    delivered_at: datetime | None


def simulate_day(n: int = 2000, seed: int = 22) -> tuple[list[Plan], list[ev.DomainEvent]]:
    rng = random.Random(seed)
    plans, events = [], []
    start = datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(hours=8)
    outcomes = ["on_time"] * 80 + ["late"] * 10 + ["failed_then_on_time"] * 4
    outcomes += ["failed_then_late"] * 2 + ["undelivered"] * 4

    def eid() -> str:
        return f"evt-{rng.getrandbits(64):016x}"

    for route in range(n // 20):
        route_id, stops = f"r-{route}", []
        client = "c-freshmart" if route % 3 else "c-bookhouse"
        for i in range(20):
            pid = f"p-{route}-{i}"
            window_end = start + timedelta(hours=2 + (route % 6), minutes=i * 5)
            eta = window_end - timedelta(minutes=rng.randint(10, 50))
            outcome = rng.choice(outcomes)
            delivered = None
            if outcome in ("on_time", "failed_then_on_time"):
                delivered = window_end - timedelta(minutes=rng.randint(1, 60))
            elif outcome in ("late", "failed_then_late"):
                delivered = window_end + timedelta(minutes=rng.randint(1, 90))
            plans.append(Plan(pid, client, window_end, eta, outcome, delivered))
            stops.append((pid, i, eta, window_end))
        out_at = start - timedelta(minutes=30)
        for pid, _, _, window_end in stops:
            events.append(_out(eid(), pid, client, route_id, out_at, window_end, 1))
        events.append(
            ev.RouteEtaUpdated(
                event_id=eid(),
                occurred_at=out_at + timedelta(seconds=1),
                route_id=route_id,
                stops=tuple(
                    ev.StopEta(parcel_id=p, sequence=i, eta=eta, window_end=w)
                    for p, i, eta, w in stops
                ),
            )
        )
        # A later ETA never counts: accuracy is of the first one announced.
        events.append(
            ev.RouteEtaUpdated(
                event_id=eid(),
                occurred_at=out_at + timedelta(minutes=20),
                route_id=route_id,
                stops=tuple(
                    ev.StopEta(parcel_id=p, sequence=i, eta=w, window_end=w) for p, i, _, w in stops
                ),
            )
        )
    for plan in plans:
        common = {"parcel_id": plan.parcel_id, "shipment_id": "s-1", "client_id": plan.client_id}
        who = {"route_id": "r", "driver_id": "drv-1", "vehicle_id": "veh-1"}
        if plan.outcome.startswith("failed") or plan.outcome == "undelivered":
            failed_at = plan.window_end - timedelta(hours=1, minutes=30)
            events.append(
                ev.DeliveryFailed(
                    event_id=eid(),
                    occurred_at=failed_at,
                    failed_at=failed_at,
                    reason="recipient absent"
                    if plan.outcome != "undelivered"
                    else "address not found",
                    attempt=1,
                    recipient_phone="+919812345678",
                    **common,
                    **who,
                )
            )
            if plan.outcome != "undelivered":
                events.append(
                    _out(
                        eid(),
                        plan.parcel_id,
                        plan.client_id,
                        "r",
                        failed_at + timedelta(minutes=5),
                        plan.window_end,
                        2,
                    )
                )
        if plan.delivered_at is not None:
            delivered = ev.ParcelDelivered(
                event_id=eid(),
                occurred_at=plan.delivered_at,
                delivered_at=plan.delivered_at,
                lat=12.97,
                lng=77.59,
                window_end=plan.window_end,
                recipient_phone="+919812345678",
                **common,
                **who,
            )
            events += [delivered, delivered]  # at-least-once: the archive may hold it twice
    return plans, events


def _out(
    event_id: str,
    pid: str,
    client: str,
    route: str,
    at: datetime,
    window_end: datetime,
    attempt: int,
) -> ev.ParcelOutForDelivery:
    return ev.ParcelOutForDelivery(
        event_id=event_id,
        occurred_at=at,
        parcel_id=pid,
        shipment_id="s-1",
        client_id=client,
        route_id=route,
        driver_id="drv-1",
        vehicle_id="veh-1",
        recipient_phone="+919812345678",
        lat=12.97,
        lng=77.59,
        address="MG Road",
        window_start=window_end - timedelta(hours=3),
        window_end=window_end,
        attempt=attempt,
    )


def archive(warehouse: Warehouse, events: list[ev.DomainEvent]) -> None:
    """The rows a BigQuery subscription with write_metadata writes for these events."""
    rows: list[dict[str, Any]] = []
    for n, event in enumerate(events):
        message = CODEC.to_message(event)
        rows.append(
            {
                "subscription_name": "events-archive",
                "message_id": str(n),
                "publish_time": event.occurred_at,
                "attributes": json.dumps(dict(message.attributes), separators=(",", ":")),
                "data": message.data,
            }
        )
    warehouse.append_rows(ARCHIVE, rows)


def by_hand(
    plans: list[Plan],
) -> tuple[dict[tuple[str, str], dict[str, Any]], Counter[tuple[str, str]]]:
    daily: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"parcels": 0, "delivered": 0, "on_time": 0, "first_attempt": 0, "errors": []}
    )
    causes: Counter[tuple[str, str]] = Counter()
    for p in plans:
        d = daily[(p.client_id, p.window_end.date().isoformat())]
        d["parcels"] += 1
        d["delivered"] += p.delivered_at is not None
        d["on_time"] += p.outcome in ("on_time", "failed_then_on_time")
        d["first_attempt"] += p.outcome in ("on_time", "late")
        if p.delivered_at is not None:
            d["errors"].append(abs((p.delivered_at - p.eta).total_seconds()))
        cause = {
            "late": "late",
            "failed_then_late": "failed: recipient absent",
            "undelivered": "failed: address not found",
        }.get(p.outcome)
        if cause:
            causes[(p.client_id, cause)] += 1
    return daily, causes


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[SlaReport, list[Plan]]:
    plans, events = simulate_day()
    warehouse = EmbeddedWarehouse(tmp_path_factory.mktemp("sla"))
    archive(warehouse, events)
    return sla_report(warehouse, ARCHIVE, CODEC, DAY, DAY), plans


def test_the_figures_are_the_hand_count_of_the_simulated_day(
    report: tuple[SlaReport, list[Plan]],
) -> None:
    result, plans = report
    assert len(plans) == 2000 and sum(p.outcome != "on_time" for p in plans) > 300
    daily, causes = by_hand(plans)
    assert {(d.client_id, d.day) for d in result.daily} == set(daily)
    for d in result.daily:
        hand = daily[(d.client_id, d.day)]
        assert (d.parcels, d.delivered, d.on_time, d.first_attempt) == (
            hand["parcels"],
            hand["delivered"],
            hand["on_time"],
            hand["first_attempt"],
        )
        assert d.eta_error_s == pytest.approx(sum(hand["errors"]) / len(hand["errors"]))
    got = Counter({(b.client_id, b.cause): b.breaches for b in result.breaches})
    assert got == causes


def test_one_client_only(tmp_path: Path) -> None:
    plans, events = simulate_day(n=200)
    warehouse = EmbeddedWarehouse(tmp_path)
    archive(warehouse, events)
    result = sla_report(warehouse, ARCHIVE, CODEC, DAY, DAY, client="c-bookhouse")
    assert {d.client_id for d in result.daily} == {"c-bookhouse"}
    assert sum(d.parcels for d in result.daily) == sum(p.client_id == "c-bookhouse" for p in plans)


def test_csv_and_html_carry_the_figures(report: tuple[SlaReport, list[Plan]]) -> None:
    result, _ = report
    lines = as_csv(result).splitlines()
    assert lines[0].startswith("kind,client_id,day,parcels")
    assert len(lines) == 1 + len(result.daily) + len(result.breaches)
    page = as_html(result)
    assert page.count('<svg class="chart') == 4 and "<script" not in page and "http" not in page


def test_the_sql_is_the_subset_both_engines_read() -> None:
    for sql in (DAILY_SQL, CAUSES_SQL):
        # GoogleSQL and DuckDB alike: $name parameters only, no engine-specific function.
        for word in ("COUNTIF", "IFNULL", "DATE_DIFF", "TIMESTAMP_DIFF", "::", "EPOCH", "LIMIT"):
            assert word not in sql.upper()


# BigQuery's dialect ----------------------------------------------------------------------------

# GoogleSQL's reserved keywords (cloud.google.com/bigquery/docs/reference/standard-sql/lexical
# #reserved_keywords): an identifier, and so a named parameter (``@`` identifier), that is one
# must be quoted.
RESERVED = frozenset(
    """ALL AND ANY ARRAY AS ASC ASSERT_ROWS_MODIFIED AT BETWEEN BY CASE CAST COLLATE CONTAINS
    CREATE CROSS CUBE CURRENT DEFAULT DEFINE DESC DISTINCT ELSE END ENUM ESCAPE EXCEPT EXCLUDE
    EXISTS EXTRACT FALSE FETCH FOLLOWING FOR FROM FULL GROUP GROUPING GROUPS HASH HAVING IF IGNORE
    IN INNER INTERSECT INTERVAL INTO IS JOIN LATERAL LEFT LIKE LIMIT LOOKUP MERGE NATURAL NEW NO
    NOT NULL NULLS OF ON OR ORDER OUTER OVER PARTITION PRECEDING PROTO QUALIFY RANGE RECURSIVE
    RESPECT RIGHT ROLLUP ROWS SELECT SET SOME STRUCT TABLESAMPLE THEN TO TREAT TRUE UNBOUNDED
    UNION UNNEST USING WHEN WHERE WINDOW WITH WITHIN""".split()  # noqa: SIM905 (as the docs list it)
)
# Functions and syntax one engine reads and the other refuses or reads differently.
REFUSED = ("COUNTIF", "IFNULL", "DATE_DIFF", "TIMESTAMP_DIFF", "::", "EPOCH", "LIMIT")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")

BIGQUERY_RULES = (
    # Double quotes are a string literal in GoogleSQL, an identifier in DuckDB.
    ("no double-quoted text", lambda sql: '"' not in sql),
    # Parameters are @name once the adapter rewrote $name; a $ left over is a syntax error.
    ("no $ outside a string", lambda sql: "$" not in sql),
    (
        "a named parameter is not a reserved keyword",
        lambda sql: not {p.upper() for p in re.findall(r"@(\w+)", sql)} & RESERVED,
    ),
    (
        "an alias is not a reserved keyword",
        lambda sql: not {a.upper() for a in re.findall(r"\bAS\s+(\w+)", sql, re.I)} & RESERVED,
    ),
    (
        "tables are dataset.table (the client's project)",
        lambda sql: all(
            t.count(".") == 1 for t in re.findall(r"(?<![@\w])FROM\s+([\w.`]+)", sql, re.I)
        ),
    ),
    (
        "no function or syntax only one engine reads",
        lambda sql: not any(word in sql.upper() for word in REFUSED),
    ),
)


def bigquery_problems(sql: str) -> list[str]:
    """The ``BIGQUERY_RULES`` that ``sql`` (as sent to BigQuery) breaks, string literals aside."""
    bare = _STRING.sub("''", sql)
    return [rule for rule, holds in BIGQUERY_RULES if not holds(bare)]


def test_the_rules_catch_what_bigquery_refuses() -> None:
    assert bigquery_problems("SELECT a FROM d.t WHERE b = @run AND c = 'x$\"'") == []
    assert bigquery_problems("SELECT a FROM d.t WHERE b >= @from") == [
        "a named parameter is not a reserved keyword"
    ]
    assert bigquery_problems('SELECT "a" FROM t WHERE b = $c') == [
        "no double-quoted text",
        "no $ outside a string",
        "tables are dataset.table (the client's project)",
    ]
    assert bigquery_problems("SELECT COUNTIF(x) AS end FROM d.t") == [
        "an alias is not a reserved keyword",
        "no function or syntax only one engine reads",
    ]


def bigquery_archive(events: list[ev.DomainEvent]) -> tuple[StubBigQuery, BigQueryWarehouse]:
    """The archive table as terraform/modules/pubsub/bigquery.tf creates it (the subscription's
    columns, attributes JSON, day partitions on publish_time, a partition filter required),
    holding ``events``, behind the BigQuery adapter over the stand-in of Google's client."""
    project = "meridian-test"
    client = StubBigQuery(project)
    client.create_dataset(f"{project}.{ARCHIVE.split('.')[0]}")
    table = bigquery.Table(
        f"{project}.{ARCHIVE}",
        schema=subscription_table_schema(None, write_metadata=True, use_topic_schema=False),
    )
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN
    )
    table.require_partition_filter = True
    client.create_table(table)
    warehouse = BigQueryWarehouse(project, client=client)
    archive(warehouse, events)
    return client, warehouse


def test_bigquery_gives_the_figures_duckdb_gives(
    report: tuple[SlaReport, list[Plan]],
) -> None:
    on_duckdb, plans = report
    _, events = simulate_day()
    client, warehouse = bigquery_archive(events)

    on_bigquery = sla_report(warehouse, ARCHIVE, CODEC, DAY, DAY)

    assert len(on_bigquery.daily) == len(on_duckdb.daily) > 1
    for got, want in zip(on_bigquery.daily, on_duckdb.daily, strict=True):
        assert (got.client_id, got.day, got.parcels, got.delivered) == (
            want.client_id,
            want.day,
            want.parcels,
            want.delivered,
        )
        assert (got.on_time, got.first_attempt) == (want.on_time, want.first_attempt)
        assert got.eta_error_s == pytest.approx(want.eta_error_s)
    assert on_bigquery.breaches == on_duckdb.breaches
    assert sum(d.parcels for d in on_bigquery.daily) == len(plans)
    queries = [request[0] for kind, request in client.requests if kind == "query"]
    assert len(queries) == 3  # the archive read, the daily figures, the breaches
    for sql in queries:
        assert bigquery_problems(sql) == [], sql


def test_reconciles_archive_check_runs_on_bigquerys_json_column() -> None:
    """reconcile finds a delivery's event in the archive by its id (Warehouse.json_text), the
    same query on BigQuery, where ``attributes`` is JSON, as on DuckDB."""
    from meridian.app.reconcile import _check_archive

    _, events = simulate_day(n=200)
    client, warehouse = bigquery_archive(events)
    delivered = {
        e.parcel_id: (e.event_id, e.occurred_at)
        for e in events
        if isinstance(e, ev.ParcelDelivered)
    }
    assert delivered
    assert list(_check_archive(warehouse, ARCHIVE, delivered, DAY)) == []
    missing = {"p-lost": ("evt-never-archived", datetime.combine(DAY, datetime.min.time(), UTC))}
    (difference,) = _check_archive(warehouse, ARCHIVE, {**delivered, **missing}, DAY)
    assert difference.parcel_id == "p-lost" and "not archived" in difference.what
    queries = [request[0] for kind, request in client.requests if kind == "query"]
    for sql in queries:
        assert bigquery_problems(sql) == [], sql
