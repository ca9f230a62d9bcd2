"""The first load: every row of the monolith into Meridian, through the sync jobs' own apply path
(``services.sync.apply.Applier``: the same mappings, validation, links and conflict rules), so a
backfilled record is exactly what the minute sync would have made of it.

Entities go in the order a sync applies them (identities before the shipments that name them;
a shipment arrives with its parcels). Each entity's rows are read in keyset batches on ``id``
(an index range per batch, whatever the table's size) and applied in document-store transactions.

**Resumable.** After each batch, ``sync_backfill/{entity}`` records the last id applied and the
rows so far: a backfill killed at any point and run again continues after the last recorded
batch. What committed after that record (part of the batch in flight) is applied again, which
changes nothing: each row's link says its version is already there (``unchanged``).

**Handing over to the minute sync.** Before its first batch of an entity, when the pull has never
run for it, the backfill sets the pull's cursor (``bridge_cursors``) to the open-transaction
horizon (``services.sync.pull.read_horizon``): every row stamped before it has committed and is
read by the backfill, every change after it is the pull's. The first pull then brings what changed
during the backfill, not the whole table again.

Run by ``meridian sync backfill`` (a progress bar, then the throughput) or as the ``sync-backfill``
Cloud Run Job (its argument: entity names, comma-separated, or none for all).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from psycopg import sql

from meridian import adapters, metrics
from meridian.config import Settings
from meridian.observability import get_logger
from meridian.ports import DocumentStore
from services.sync import legacy
from services.sync.apply import Applier, Outcome
from services.sync.entities import ENTITIES, Entity, entity
from services.sync.legacy import Connection
from services.sync.pull import read_cursor, read_horizon
from services.sync.reconcile import Progress, Silent

log = get_logger(__name__)

JOB = "sync-backfill"
CHECKPOINTS = "sync_backfill"


@dataclass
class Checkpoint:
    """How far the backfill of one entity has got."""

    entity: str
    after_id: str = ""
    rows: int = 0
    done: bool = False

    @property
    def path(self) -> str:
        return f"{CHECKPOINTS}/{self.entity}"


@dataclass
class Moved:
    """What one entity's backfill did in this run."""

    rows: int = 0
    seconds: float = 0.0
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def read_checkpoint(store: DocumentStore, name: str) -> Checkpoint:
    found = store.get(Checkpoint(name).path)
    if found is None:
        return Checkpoint(name)
    data = found.data
    rows = data.get("rows")
    return Checkpoint(
        name,
        str(data.get("after_id") or ""),
        rows if isinstance(rows, int) else 0,
        data.get("done") is True,
    )


def _record(store: DocumentStore, checkpoint: Checkpoint, now: datetime) -> None:
    store.set(
        checkpoint.path,
        {
            "entity": checkpoint.entity,
            "after_id": checkpoint.after_id,
            "rows": checkpoint.rows,
            "done": checkpoint.done,
            "updated_at": now,
        },
    )


def _hand_over_to_the_pull(conn: Connection, target: Entity) -> None:
    """The pull's cursor at the horizon, if the pull has none yet for ``target``."""
    if read_cursor(conn, target.name) is not None:
        return
    conn.execute(
        "INSERT INTO bridge_cursors (entity, updated_at, id) VALUES (%s, %s, '')"
        " ON CONFLICT (entity) DO NOTHING",
        (target.name, read_horizon(conn)),
    )


def backfill(
    store: DocumentStore,
    conn: Connection,
    names: Iterable[str] = ENTITIES,
    *,
    batch: int = 1000,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress | None = None,
) -> dict[str, Moved]:
    """Apply every row of each entity named not yet backfilled; what each entity's run moved."""
    progress = progress or Silent()
    chosen = [entity(n) for n in names]
    order = [e for e in ENTITIES.values() if e in chosen]
    applier = Applier(store, conn, JOB, clock, observe_lag=False)
    moved: dict[str, Moved] = {}
    for target in order:
        checkpoint = read_checkpoint(store, target.name)
        total = _count(conn, target)
        progress.start(target.name, total)
        progress.advance(checkpoint.rows)
        if checkpoint.done:
            continue
        if not checkpoint.rows:
            _hand_over_to_the_pull(conn, target)
        moved[target.name] = _entity(store, conn, applier, target, checkpoint, batch, progress)
    return moved


def _entity(
    store: DocumentStore,
    conn: Connection,
    applier: Applier,
    target: Entity,
    checkpoint: Checkpoint,
    batch: int,
    progress: Progress,
) -> Moved:
    query = sql.SQL("SELECT * FROM {} WHERE id > %s ORDER BY id LIMIT %s").format(
        sql.Identifier(target.table)
    )
    moved = Moved()
    started = time.perf_counter()
    while True:
        rows = conn.execute(query, (checkpoint.after_id, batch)).fetchall()
        if rows:
            outcome = applier.apply(target, rows)
            moved.outcome.add(outcome)
            for name, count in (
                ("created", outcome.created),
                ("updated", outcome.updated),
                ("unchanged", outcome.unchanged),
                ("rejected", len(outcome.rejected)),
            ):
                metrics.sync_rows(target.name, name, count)
            checkpoint.after_id, checkpoint.rows = str(rows[-1]["id"]), checkpoint.rows + len(rows)
            moved.rows += len(rows)
        checkpoint.done = len(rows) < batch
        _record(store, checkpoint, applier.clock())
        progress.advance(len(rows))
        if checkpoint.done:
            break
    moved.seconds = time.perf_counter() - started
    log.info(
        "entity backfilled",
        entity=target.name,
        rows=moved.rows,
        seconds=round(moved.seconds, 3),
        rows_per_s=round(moved.rows_per_s, 1),
        created=moved.outcome.created,
        unchanged=moved.outcome.unchanged,
        rejected=len(moved.outcome.rejected),
    )
    return moved


def _count(conn: Connection, target: Entity) -> int:
    query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(target.table))
    found = conn.execute(query).fetchone()
    return int(found["n"]) if found else 0


def sync_backfill(argument: str, settings: Settings) -> int:
    """Job entry point (``meridian job run sync-backfill [ENTITIES]``): 1 when a row was
    rejected (the rest applied; the rows are in the log)."""
    names = [n.strip() for n in argument.split(",") if n.strip()] or list(ENTITIES)
    store = adapters.document_store(settings, service=JOB)
    with legacy.connect(settings, autocommit=True) as conn:
        moved = backfill(store, conn, names, batch=settings.legacy.page_size)
    rows = sum(m.rows for m in moved.values())
    seconds = sum(m.seconds for m in moved.values())
    rejected = [r for m in moved.values() for r in m.outcome.rejected]
    print(
        f"backfill: {rows} rows in {seconds:.1f} s"
        + (f" ({rows / seconds:,.0f} rows/s)" if seconds else "")
        + (f"; {len(rejected)} rejected: {', '.join(rejected[:5])}" if rejected else ""),
        flush=True,
    )
    return 1 if rejected else 0
