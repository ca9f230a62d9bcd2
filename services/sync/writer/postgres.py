"""The legacy writer's port (``services.sync.writer.tables``) on the monolith's PostgreSQL.

Connections come from ``services.sync.legacy`` (the bridge's one module that opens them) and are
kept open between events, up to ``size`` of them, one per batch in flight: a new connection per
event would cost more than the event's transaction. Each transaction marks its writes as the
bridge's (``legacy.as_meridian``: the trigger stamps ``written_by = 'meridian'``); a savepoint
is PostgreSQL's ``SAVEPOINT``; a parcel is read ``FOR UPDATE``, so two events about one parcel
are applied one after the other. A lost connection or an unreachable server is ``Unavailable``
(answered 503, so Pub/Sub retries), and that connection is dropped.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import sql

from meridian.config import Settings
from meridian.domain.errors import Unavailable
from services.sync import legacy
from services.sync.entities import Entity
from services.sync.writer.tables import (
    PUSHED_COLUMNS,
    Fact,
    LegacyParcel,
    LegacyTables,
    LegacyTransaction,
)

# ``pulled``: the row's change is at or before the pull's cursor (services/sync/pull.py).
_SELECT_PARCEL = sql.SQL(
    "SELECT p.id, {}, p.written_by, p.updated_at, p.version, "
    "coalesce((p.updated_at, p.id) <= (c.updated_at, c.id), false) AS pulled "
    "FROM parcels p LEFT JOIN bridge_cursors c ON c.entity = 'parcels' "
    "WHERE p.id = %s FOR UPDATE OF p"
).format(sql.SQL(", ").join(sql.Identifier("p", c) for c in PUSHED_COLUMNS))
_CLAIM = (
    "INSERT INTO bridge_processed_events (event_id, event_type, subject, occurred_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING"
)
_ORIGIN = "SELECT set_config('meridian.origin', %s, true)"
_NEWER = (
    "SELECT EXISTS (SELECT 1 FROM bridge_processed_events "
    "WHERE subject = %s AND occurred_at > %s AND event_id <> %s)"
)


class _Transaction(LegacyTransaction):
    def __init__(self, conn: legacy.Connection) -> None:
        self._conn = conn

    def claim(self, fact: Fact) -> bool:
        cursor = self._conn.execute(
            _CLAIM, (fact.event_id, fact.event_type, fact.parcel_id, fact.occurred_at)
        )
        return cursor.rowcount == 1

    def parcel(self, parcel_id: str) -> LegacyParcel | None:
        row = self._conn.execute(_SELECT_PARCEL, (parcel_id,)).fetchone()
        if row is None:
            return None
        return LegacyParcel(
            parcel_id=row["id"],
            values={column: row[column] for column in PUSHED_COLUMNS},
            written_by=row["written_by"],
            updated_at=row["updated_at"],
            version=row["version"],
            pulled=row["pulled"],
        )

    def newer_fact(self, fact: Fact) -> bool:
        row = self._conn.execute(_NEWER, (fact.parcel_id, fact.occurred_at, fact.event_id))
        found = row.fetchone()
        return bool(found and found["exists"])

    def update_parcel(
        self, parcel_id: str, changes: Mapping[str, Any], *, as_bridge: bool = True
    ) -> None:
        unknown = set(changes) - set(PUSHED_COLUMNS)
        if unknown:
            raise ValueError(f"the push direction writes {PUSHED_COLUMNS}, not {sorted(unknown)}")
        query = sql.SQL("UPDATE parcels SET {} WHERE id = %s").format(
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes)
        )
        if as_bridge:
            self._conn.execute(query, [*changes.values(), parcel_id])
            return
        self._conn.execute(_ORIGIN, ("monolith",))
        try:
            self._conn.execute(query, [*changes.values(), parcel_id])
        finally:
            legacy.as_meridian(self._conn)

    def insert(self, entity: Entity, row: Mapping[str, Any]) -> bool:
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING").format(
            sql.Identifier(entity.table),
            sql.SQL(", ").join(sql.Identifier(c) for c in entity.columns),
            sql.SQL(", ").join(sql.Placeholder() for _ in entity.columns),
        )
        cursor = self._conn.execute(query, [row[c] for c in entity.columns])
        return cursor.rowcount == 1

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        with self._conn.transaction():
            yield


class PostgresTables(LegacyTables):
    """The monolith's PostgreSQL, ``size`` connections at most, opened when first needed."""

    def __init__(self, settings: Settings, size: int = 4) -> None:
        self._settings = settings
        self._idle: queue.LifoQueue[tuple[contextlib.ExitStack, legacy.Connection]] = (
            queue.LifoQueue()
        )
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LegacyTransaction]:
        with self._slots:
            held = self._checkout()
            _, conn = held
            try:
                with conn.transaction():
                    legacy.as_meridian(conn)
                    yield _Transaction(conn)
            except psycopg.OperationalError as e:
                raise Unavailable(f"the monolith's PostgreSQL: {e}".strip()) from e
            finally:
                self._checkin(held)

    def _checkout(self) -> tuple[contextlib.ExitStack, legacy.Connection]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        stack = contextlib.ExitStack()
        try:
            conn = stack.enter_context(legacy.connect(self._settings, autocommit=True))
        except psycopg.OperationalError as e:
            stack.close()
            raise Unavailable(f"cannot reach the monolith's PostgreSQL: {e}".strip()) from e
        return stack, conn

    def _checkin(self, held: tuple[contextlib.ExitStack, legacy.Connection]) -> None:
        stack, conn = held
        if self._closed or conn.closed or conn.broken:
            _quietly_close(stack)
        else:
            self._idle.put(held)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                stack, _ = self._idle.get_nowait()
            except queue.Empty:
                return
            _quietly_close(stack)


def _quietly_close(stack: contextlib.ExitStack) -> None:
    with contextlib.suppress(psycopg.Error):
        stack.close()
