"""The scheduled pull: what changed in the monolith since the stored cursor, one ``SyncRequested``
per page onto ``sync.requests`` (the trigger the platform's scheduler calls every minute
locally, Cloud Scheduler in production: ``run_pull``).

**Keyset on (updated_at, id).** Pages are read in ``(updated_at, id)`` order after the cursor's
pair, never ``updated_at > cursor`` alone: rows sharing a timestamp across a page boundary (a
batch update stamps all its rows alike) are not skipped.

**Late commits: the open-transaction horizon.** A transaction that commits after the cursor
passed can carry an older stamp than rows already read, and would never be read. The pull
therefore reads only rows stamped before the *horizon*: the start of the oldest transaction still
open on the database that has written (``pg_stat_activity.xact_start`` where ``backend_xid`` is
set), or, with none, the time read just before looking. The schema's trigger takes the writing
transaction's id before it stamps ``updated_at = clock_timestamp()``, so a row stamped before the
clock reading belongs to a transaction that was already visible as a writer when we looked: every
row stamped before the horizon was written by a transaction that has ended, and the cursor never
passes a row that is yet to commit. A read-only transaction (the monolith's reports) holds no
transaction id and never holds the pull back. Chosen over re-reading an overlap window because it
is exact (no window to tune against the longest transaction, no page re-published every minute).
Costs: a *writing* transaction left open stalls the pull (its lag shows it; set
``idle_in_transaction_session_timeout`` on the monolith's roles), and the bridge's user needs
``pg_read_all_stats`` to see other roles' transactions (refused with that name otherwise). A row
whose ``updated_at`` the writer sets from its own clock is outside this guarantee: the schema's
trigger stamps every write.

**Cursor.** One row per entity in ``bridge_cursors`` in the monolith's database, advanced after
each page's event is published (the broker holds it durably) and committed page by page; a crash
between the two publishes that page again, which is harmless: applying is idempotent. A session
advisory lock per entity keeps two overlapping pulls from publishing the same pages.

**What is read.** Only the monolith's own changes (``written_by = 'monolith'``): the bridge's push
writes are not brought back (``services.sync.entities``). Soft deletes (``deleted_at``) are
ordinary changes, read like any other; the monolith has no tombstones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import ConfigError, Settings
from meridian.domain.events import SyncOrigin, SyncRequested, derive_event_id
from meridian.observability import get_logger
from meridian.ports import Publisher
from services.sync import legacy
from services.sync.entities import ENTITIES, MONOLITH, Entity, entity
from services.sync.legacy import Connection

log = get_logger(__name__)

REQUESTER = "sync-pull"


@dataclass(frozen=True)
class Rules:
    """How pages are bounded. Both on in production; a test turns one off to show the miss it
    prevents (``tests/integration/test_sync_pull.py``)."""

    keyset_on_id: bool = True  # (updated_at, id) > cursor, not updated_at > cursor
    open_transaction_horizon: bool = True  # read only rows stamped before the oldest open one


@dataclass(frozen=True)
class Cursor:
    updated_at: datetime
    id: str


def run_pull(
    settings: Settings,
    publisher: Publisher,
    entity_name: str | None = None,
    *,
    codec: EventCodec | None = None,
    rules: Rules = Rules(),
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Publish one ``SyncRequested`` per page of each entity's changes since its cursor (every
    entity when ``entity_name`` is None); the number of pages published."""
    codec = codec or EventCodec(load_catalog())
    chosen = [entity(entity_name)] if entity_name else list(ENTITIES.values())
    pages = 0
    with legacy.connect(settings, autocommit=True) as conn:
        for each in chosen:
            pages += pull_entity(
                conn, each, publisher, codec, settings.legacy.page_size, rules, clock
            )
    return pages


def pull_entity(
    conn: Connection,
    each: Entity,
    publisher: Publisher,
    codec: EventCodec,
    page_size: int,
    rules: Rules = Rules(),
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """The pages of one entity's changes, each published before the cursor moves past it."""
    lock = f"meridian-bridge-pull:{each.name}"
    if not _scalar(conn, "SELECT pg_try_advisory_lock(hashtext(%s))", (lock,)):
        log.info("another pull holds the entity; skipped", entity=each.name)
        return 0
    try:
        horizon = read_horizon(conn) if rules.open_transaction_horizon else None
        cursor = read_cursor(conn, each.name)
        pages = 0
        while True:
            page = _page(conn, each, cursor, horizon, page_size, rules)
            if not page:
                break
            last = Cursor(page[-1]["updated_at"], page[-1]["id"])
            event = page_request(each.name, cursor, last, clock())
            publisher.publish(codec.topic_of(event.event_type), [codec.to_message(event)])
            _move_cursor(conn, each.name, last)
            log.info("page published", entity=each.name, rows=len(page), request=event.request_id)
            cursor, pages = last, pages + 1
            if len(page) < page_size:
                break
        return pages
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))


def page_request(
    entity_name: str, after: Cursor | None, through: Cursor, now: datetime
) -> SyncRequested:
    """The page's event; its ids derive from the bounds, so a page published again after a crash
    is the same request."""
    lower = f"{after.updated_at.isoformat()}|{after.id}" if after else "|"
    bounds = f"{entity_name}|{lower}|{through.updated_at.isoformat()}|{through.id}"
    request_id = f"pull-{entity_name}-{hashlib.sha256(bounds.encode()).hexdigest()[:20]}"
    return SyncRequested(
        event_id=derive_event_id("SyncRequested", request_id),
        occurred_at=now,
        request_id=request_id,
        entity=entity_name,
        origin=SyncOrigin.SCHEDULED,
        requester=REQUESTER,
        after_updated_at=after.updated_at if after else None,
        after_id=after.id if after else None,
        through_updated_at=through.updated_at,
        through_id=through.id,
    )


def read_cursor(conn: Connection, entity_name: str) -> Cursor | None:
    row = conn.execute(
        "SELECT updated_at, id FROM bridge_cursors WHERE entity = %s", (entity_name,)
    ).fetchone()
    return None if row is None else Cursor(row["updated_at"], row["id"])


def _move_cursor(conn: Connection, entity_name: str, to: Cursor) -> None:
    conn.execute(
        "INSERT INTO bridge_cursors (entity, updated_at, id, moved_at) VALUES (%s, %s, %s, now())"
        " ON CONFLICT (entity) DO UPDATE SET updated_at = excluded.updated_at,"
        " id = excluded.id, moved_at = excluded.moved_at",
        (entity_name, to.updated_at, to.id),
    )


def read_horizon(conn: Connection) -> datetime:
    """The start of the oldest transaction open on this database that has written (other than
    ours), else the time read before looking (the module docstring says why in that order)."""
    # The clock first, then pg_stat_activity (which a transaction reads once and keeps): a write
    # stamped before this reading had taken its transaction id before it, so the scan sees it.
    looked_at = _scalar(conn, "SELECT clock_timestamp()")
    hidden = _scalar(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND state IS NULL",
    )
    if hidden:
        raise ConfigError(
            "the bridge's PostgreSQL user cannot see other sessions' transactions, which the "
            "pull must wait for: GRANT pg_read_all_stats TO the user of MERIDIAN_LEGACY_USER"
        )
    oldest_writer = _scalar(
        conn,
        "SELECT min(xact_start) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_xid IS NOT NULL",
    )
    assert isinstance(looked_at, datetime)
    if isinstance(oldest_writer, datetime) and oldest_writer < looked_at:
        return oldest_writer
    return looked_at


def _page(
    conn: Connection,
    each: Entity,
    after: Cursor | None,
    horizon: datetime | None,
    page_size: int,
    rules: Rules,
) -> list[dict[str, Any]]:
    where: list[sql.Composable] = [sql.SQL("written_by = {}").format(sql.Literal(MONOLITH))]
    params: list[Any] = []
    if after is not None:
        if rules.keyset_on_id:
            where.append(sql.SQL("(updated_at, id) > (%s, %s)"))
            params += [after.updated_at, after.id]
        else:
            where.append(sql.SQL("updated_at > %s"))
            params.append(after.updated_at)
    if horizon is not None:
        where.append(sql.SQL("updated_at < %s"))
        params.append(horizon)
    query = sql.SQL(
        "SELECT id, updated_at FROM {} WHERE {} ORDER BY updated_at, id LIMIT %s"
    ).format(sql.Identifier(each.table), sql.SQL(" AND ").join(where))
    rows = conn.execute(query, [*params, page_size]).fetchall()
    return rows


def _scalar(conn: Connection, query: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return next(iter(row.values()))
