"""Where the migration bridge stands (``meridian sync status``): per entity the pull's cursor and
how far behind the monolith it is, the last runs of the sync workflow with their outcome, and the
last reconciliation.

- **Cursors** are read from ``bridge_cursors`` in the monolith's database; an entity's *lag* is the
  age of the oldest change of the monolith past its cursor (zero when there is none): how long
  the oldest change not yet published has waited.
- **Runs** are the sync workflow's ``SyncStarted``, ``SyncEnded`` and ``SyncError`` events, read
  from the business-event archive in the warehouse (every event on ``logistics.events`` lands
  there, on both backends): one run per request and execution, its outcome the last event.
- **The last reconciliation** is ``sync_reconciliations/latest`` (``services.sync.reconcile``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from meridian.codec.events import EventCodec
from meridian.domain.errors import NotFound
from meridian.domain.events import SyncEnded, SyncError, SyncStarted
from meridian.ports import Warehouse
from services.sync.entities import ENTITIES, MONOLITH
from services.sync.legacy import Connection
from services.sync.pull import read_cursor

RUN_EVENTS = ("SyncStarted", "SyncEnded", "SyncError")


@dataclass(frozen=True)
class CursorStatus:
    entity: str
    updated_at: datetime | None  # None: the pull has not run for it
    id: str
    oldest_pending: datetime | None  # the oldest monolith change past the cursor

    def lag_s(self, now: datetime) -> float:
        return 0.0 if self.oldest_pending is None else (now - self.oldest_pending).total_seconds()


@dataclass(frozen=True)
class Run:
    """One run of the sync workflow: what its events say."""

    request_id: str
    execution_id: str
    entity: str
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str  # running, ended or error
    step: str = ""
    reason: str = ""


def cursors(conn: Connection) -> list[CursorStatus]:
    found = []
    for each in ENTITIES.values():
        cursor = read_cursor(conn, each.name)
        where = sql.SQL("written_by = {}").format(sql.Literal(MONOLITH))
        params: list[Any] = []
        if cursor is not None:
            where = sql.SQL("{} AND (updated_at, id) > (%s, %s)").format(where)
            params = [cursor.updated_at, cursor.id]
        query = sql.SQL("SELECT min(updated_at) AS oldest FROM {} WHERE {}").format(
            sql.Identifier(each.table), where
        )
        row = conn.execute(query, params).fetchone()
        found.append(
            CursorStatus(
                each.name,
                cursor.updated_at if cursor else None,
                cursor.id if cursor else "",
                row["oldest"] if row else None,
            )
        )
    return found


def last_runs(
    warehouse: Warehouse, table: str, codec: EventCodec, since: datetime, limit: int = 10
) -> list[Run]:
    """The latest ``limit`` runs reported since ``since``, newest first (none when the archive
    has no table yet)."""
    event_type = warehouse.json_text("attributes", "eventType")
    query = (
        f"SELECT attributes, data FROM {table} WHERE publish_time >= $since"
        f" AND {event_type} IN ({', '.join(repr(t) for t in RUN_EVENTS)})"
        " ORDER BY publish_time"
    )
    try:
        rows = warehouse.query(query, {"since": since})
    except NotFound:
        return []
    runs: dict[tuple[str, str], Run] = {}
    for row in rows:
        raw = row["attributes"]
        attributes = raw if isinstance(raw, dict) else json.loads(raw or "{}")
        event = codec.from_message(bytes(row["data"]), attributes)
        if not isinstance(event, SyncStarted | SyncEnded | SyncError):
            continue
        key = (event.request_id, event.execution_id)
        before = runs.get(key)
        started = before.started_at if before else None
        if isinstance(event, SyncStarted):
            runs[key] = Run(*key, event.entity, event.occurred_at, None, "running")
        elif isinstance(event, SyncEnded):
            runs[key] = Run(*key, event.entity, started, event.occurred_at, "ended")
        else:
            runs[key] = Run(
                *key, event.entity, started, event.occurred_at, "error", event.step, event.reason
            )
    ordered = sorted(runs.values(), key=lambda r: r.ended_at or r.started_at or since, reverse=True)
    return ordered[:limit]
