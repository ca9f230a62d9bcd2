"""SLA reports from the warehouse: on-time rate per client per day against the promised windows,
breaches and their causes, ETA accuracy (first announced ETA against the delivery) and the
first-attempt delivery rate.

Two steps. The archived business events of the period (a BigQuery subscription's table: Avro
``data`` with ``attributes`` and ``publish_time``) are read with one query and decoded with the
event codec (SQL cannot read Avro on either engine), and folded into one outcome row per parcel,
appended under this run's id to ``OUTCOMES``. Then the figures are SQL over those rows, the same
text on DuckDB and BigQuery (``$name`` parameters, none named after a GoogleSQL reserved keyword
such as ``from`` or ``end``; SELECT, WHERE, GROUP BY, ORDER BY, COUNT, SUM, AVG, CASE: what both
dialects read alike; ``tests/integration/test_sla_report.py`` runs them through the BigQuery
adapter and checks them against GoogleSQL's rules). A parcel's day is its window's end day, UTC.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from meridian.codec.events import EventCodec
from meridian.domain.events import (
    DeliveryFailed,
    ParcelDelivered,
    ParcelOutForDelivery,
    RouteEtaUpdated,
)
from meridian.ports import Warehouse

OUTCOMES = "reports.sla_parcels"

DAILY_SQL = f"""
SELECT client_id, day, COUNT(*) AS parcels, SUM(delivered) AS delivered, SUM(on_time) AS on_time,
       SUM(first_attempt) AS first_attempt, AVG(eta_error_s) AS eta_error_s
FROM {OUTCOMES}
WHERE run_id = $run AND ($client = '' OR client_id = $client)
GROUP BY client_id, day
ORDER BY client_id, day
"""

CAUSES_SQL = f"""
SELECT client_id, day, cause, COUNT(*) AS breaches
FROM {OUTCOMES}
WHERE run_id = $run AND on_time = 0 AND ($client = '' OR client_id = $client)
GROUP BY client_id, day, cause
ORDER BY client_id, day, cause
"""


@dataclass
class _Parcel:
    client_id: str
    window_end: datetime
    delivered_at: datetime | None = None
    attempts: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    first_eta: tuple[datetime, datetime] | None = None  # (announced at, eta)


@dataclass(frozen=True)
class DailySla:
    client_id: str
    day: str
    parcels: int
    delivered: int
    on_time: int
    first_attempt: int
    eta_error_s: float | None  # mean absolute error of the first announced ETA

    @property
    def on_time_rate(self) -> float:
        return self.on_time / self.parcels if self.parcels else 0.0

    @property
    def first_attempt_rate(self) -> float:
        return self.first_attempt / self.parcels if self.parcels else 0.0


@dataclass(frozen=True)
class Breaches:
    client_id: str
    day: str
    cause: str
    breaches: int


@dataclass(frozen=True)
class SlaReport:
    start: date
    end: date
    daily: list[DailySla]
    breaches: list[Breaches]


def sla_report(
    warehouse: Warehouse,
    archive_table: str,
    codec: EventCodec,
    start: date,
    end: date,
    client: str = "",
) -> SlaReport:
    """The report of the parcels whose window ends from ``start`` to ``end`` (both included)."""
    run = load_outcomes(warehouse, archive_table, codec, start, end)
    parameters = {"run": run, "client": client}
    daily = [DailySla(**row) for row in warehouse.query(DAILY_SQL, parameters)]
    causes = [Breaches(**row) for row in warehouse.query(CAUSES_SQL, parameters)]
    return SlaReport(start, end, daily, causes)


def load_outcomes(
    warehouse: Warehouse, archive_table: str, codec: EventCodec, start: date, end: date
) -> str:
    """Fold the archived events into one outcome row per parcel of the period, appended to
    ``OUTCOMES`` under a new run id (returned). Events are read from a day before the period
    (a parcel goes out before its window ends) to a day after it (late deliveries)."""
    first = datetime.combine(start, time(), UTC)
    after = datetime.combine(end, time(), UTC) + timedelta(days=1)
    rows = warehouse.query(
        f"SELECT message_id, attributes, data FROM {archive_table}"
        " WHERE publish_time >= $since AND publish_time < $before",
        {"since": first - timedelta(days=1), "before": after + timedelta(days=1)},
    )
    parcels = fold(codec, rows)
    run = uuid.uuid4().hex
    outcomes = [
        outcome_row(run, pid, p) for pid, p in parcels.items() if first <= p.window_end < after
    ]
    warehouse.append_rows(OUTCOMES, outcomes)
    return run


def fold(codec: EventCodec, rows: Sequence[Mapping[str, Any]]) -> dict[str, _Parcel]:
    """Each parcel's story from its events, each event once (archive rows may repeat)."""
    parcels: dict[str, _Parcel] = {}
    seen: set[str] = set()
    events = []
    for row in rows:
        attributes = row["attributes"]
        attributes = json.loads(attributes) if isinstance(attributes, str) else attributes
        if attributes.get("eventType") not in _FOLDED:
            continue
        event = codec.from_message(row["data"], attributes)
        if event.event_id not in seen:
            seen.add(event.event_id)
            events.append(event)
    for event in sorted(events, key=lambda e: e.occurred_at):
        if isinstance(event, ParcelOutForDelivery):
            parcel = parcels.setdefault(event.parcel_id, _Parcel(event.client_id, event.window_end))
            parcel.window_end = event.window_end
            parcel.attempts.add(event.attempt)
        elif isinstance(event, ParcelDelivered) and event.parcel_id in parcels:
            parcels[event.parcel_id].delivered_at = event.delivered_at
        elif isinstance(event, DeliveryFailed) and event.parcel_id in parcels:
            parcels[event.parcel_id].failures.append(event.reason)
        elif isinstance(event, RouteEtaUpdated):
            for stop in event.stops:
                told = parcels.get(stop.parcel_id)
                if told is not None and told.first_eta is None:
                    told.first_eta = (event.occurred_at, stop.eta)
    return parcels


_FOLDED = {"ParcelOutForDelivery", "ParcelDelivered", "DeliveryFailed", "RouteEtaUpdated"}


def outcome_row(run: str, parcel_id: str, parcel: _Parcel) -> dict[str, Any]:
    delivered = parcel.delivered_at is not None
    on_time = delivered and parcel.delivered_at <= parcel.window_end  # type: ignore[operator]
    if on_time:
        cause = None
    elif parcel.failures:
        cause = f"failed: {parcel.failures[0]}"
    elif delivered:
        cause = "late"
    else:
        cause = "not delivered"
    eta_error = (
        abs((parcel.delivered_at - parcel.first_eta[1]).total_seconds())
        if delivered and parcel.first_eta is not None and parcel.delivered_at is not None
        else None
    )
    return {
        "run_id": run,
        "parcel_id": parcel_id,
        "client_id": parcel.client_id,
        "day": parcel.window_end.astimezone(UTC).date().isoformat(),
        "publish_time": parcel.window_end,  # the partition: the day the window ends
        "delivered": int(delivered),
        "on_time": int(on_time),
        "first_attempt": int(delivered and not parcel.failures and len(parcel.attempts) == 1),
        "eta_error_s": eta_error,
        "cause": cause,
    }
