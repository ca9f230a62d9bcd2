"""Applying the monolith's rows into Meridian: what the sync jobs do with a ``SyncRequested``.

The page is re-read from PostgreSQL (the event carries bounds or ids, never rows: what is applied
is the row as it is now) and written into the command service's collections through document
store transactions, ``CHUNK`` rows each. Per row, ``sync_links/{entity}~{id}`` remembers the row
version last applied, the document's ``updated_at`` that write left and the base of the next
three-way merge (per synced field, a digest of each side's value after that write), in the same
transaction as the document, so applying is idempotent: a row whose version the link already
holds is skipped, and a job killed mid-page and run again writes only what had not committed.

- **New records.** A shipment is created with its parcels (those the monolith holds for it), in
  one transaction, as the command path creates them (``ShipmentCreated`` follows from the
  shipment's document, and each parcel's later moves are the command path's events). A parcel
  whose shipment Meridian does not know brings its shipment in first.
- **Changed rows**: ``services.sync.conflicts.merge`` merges the row into the document field by
  field against the link's base: a field only the monolith changed is taken, one only Meridian
  changed is kept, and one both changed to different values is decided by the rules (status by
  the state machine, others by the last writer); a delivered or returned parcel is never moved
  back (rule ``final-state``). Each such conflict is recorded in
  ``sync_conflicts/{entity}~{id}~{version}`` (both versions, each decision: winner and rule) and
  counted (``meridian_sync_conflicts``). A link written before the base existed falls back to the
  two-way rules (``conflicts.resolve``) when the document changed since, else takes the row
  (a delivered or returned parcel kept).
- **A parcel status Meridian cannot express** (the monolith's ASSIGNED has no route, its PLANNED
  no dispatch window: ``conflicts.NEEDS``): Meridian's status stands with its fields, recorded as
  a conflict by rule ``inexpressible`` with what was missing (``inexpressible``), so the event
  publisher never meets a parcel its event cannot describe; the rest of the row is applied, and
  reconciliation shows the status difference until either side moves the parcel on.
- **Changed in Meridian only** never reaches here as a new row version: nothing to do.
- **Meridian's winning values go back** (``write_back``). A field Meridian won by a rule (final
  state, state machine, last writer, source priority; not ``inexpressible``, which leaves the
  monolith's status alone) is written into the monolith's row once the document store has
  committed, as the bridge's (``legacy.as_meridian``: ``written_by = 'meridian'``, so the pull
  does not bring it back) and only ``WHERE version =`` the version applied: a row the monolith
  changed again meanwhile is left alone, and the next pull merges that change. The push direction
  carries only parcel facts, so without this the monolith would keep the value it lost.
  **Crash safety**: the link records the fields to write back (``write_back``) with the version
  applied, in the same transaction as the document. A job killed between the two commits leaves
  the row at that version: rerun, the row is "applied already", and the write is derived again
  from the link (the fields it names whose value in Meridian is still the one it won, as the
  base records it). A write that did land leaves the row one version further, the bridge's; when
  the monolith next changes it, a recorded field the row holds with Meridian's value counts as
  unchanged by the monolith (the base is read as if written back), so it is no conflict. A field
  still to write back after a guarded write found the row changed is carried to the next merge.

What the bridge writes carries the echo markers of ``services.sync.entities``. A row that does not
make a valid Meridian record (a parcel without a recipient's phone in E.164) is rejected: logged,
left unapplied, and the job ends non-zero after applying the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from pydantic import ValidationError

from meridian import metrics
from meridian.domain.events import SyncRequested
from meridian.domain.model import Driver, Parcel
from meridian.domain.states import TERMINAL_STATES, ParcelStatus
from meridian.observability import get_logger
from meridian.ports import Document, DocumentStore, Transaction
from services.sync.conflicts import (
    STATUS_FIELDS,
    Base,
    Decision,
    Rule,
    Source,
    keep_expressible,
    merge,
    resolve,
)
from services.sync.entities import (
    MONOLITH,
    PARCELS,
    SHIPMENTS,
    SYNC_COMMAND,
    SYNC_ROLE,
    Entity,
    Row,
    field_digests,
    row_checksum,
    synced_values,
)
from services.sync.legacy import Connection, as_meridian

log = get_logger(__name__)

CONFLICTS = "sync_conflicts"
Seen = Mapping[str, Document | None]  # what a transaction read, by path
CHUNK = 100  # rows per document-store transaction (Firestore allows 500 writes; a row makes <= 3)


@dataclass(frozen=True)
class WriteBack:
    """Meridian's winning values for a monolith row, to write only while the row is still at
    ``version`` (the one applied)."""

    entity: Entity
    id: str
    version: int
    columns: Mapping[str, Any]


@dataclass
class Outcome:
    """What applying did, row by row."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: list[tuple[str, list[Decision]]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    written_back: int = 0  # rows the monolith now holds Meridian's winning values in
    # Not kept past the commit that counts them (``Applier._in_transaction``):
    changed_at: list[datetime] = field(default_factory=list)  # the applied rows' updated_at
    write_backs: list[WriteBack] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.conflicts += other.conflicts
        self.rejected += other.rejected
        self.written_back += other.written_back


# Reading the page ---------------------------------------------------------------------------


def read_rows(
    conn: Connection, entity: Entity, request: SyncRequested, page_size: int
) -> Iterator[list[dict[str, Any]]]:
    """The request's rows as they are now, in batches of ``page_size``: exactly ``ids`` (whoever
    wrote them last), or the monolith's changes within the bounds in ``(updated_at, id)``
    order."""
    table = sql.Identifier(entity.table)
    if request.ids:
        ids = sorted(set(request.ids))
        for start in range(0, len(ids), page_size):
            query = sql.SQL("SELECT * FROM {} WHERE id = ANY(%s) ORDER BY id").format(table)
            yield conn.execute(query, (ids[start : start + page_size],)).fetchall()
        return
    after = (
        (request.after_updated_at, request.after_id or "")
        if request.after_updated_at is not None
        else None
    )
    while True:
        where: list[sql.Composable] = [sql.SQL("written_by = {}").format(sql.Literal(MONOLITH))]
        params: list[Any] = []
        if after is not None:
            where.append(sql.SQL("(updated_at, id) > (%s, %s)"))
            params += list(after)
        if request.through_updated_at is not None:
            where.append(sql.SQL("(updated_at, id) <= (%s, %s)"))
            params += [request.through_updated_at, request.through_id or ""]
        query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY updated_at, id LIMIT %s").format(
            table, sql.SQL(" AND ").join(where)
        )
        rows = conn.execute(query, [*params, page_size]).fetchall()
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        after = (rows[-1]["updated_at"], rows[-1]["id"])


def parcels_of(conn: Connection, shipment_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    rows = conn.execute(
        "SELECT * FROM parcels WHERE shipment_id = ANY(%s) ORDER BY id", (list(shipment_ids),)
    ).fetchall()
    found: dict[str, list[dict[str, Any]]] = {s: [] for s in shipment_ids}
    for row in rows:
        found[row["shipment_id"]].append(row)
    return found


# Applying ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applier:
    """Applies rows of the monolith into ``store`` as ``job``."""

    store: DocumentStore
    conn: Connection
    job: str
    clock: Callable[[], datetime]
    # The sync lag (meridian_sync_lag_seconds{direction="to_meridian"}) of each row applied; the
    # backfill's rows are as old as the monolith's history, so it observes none.
    observe_lag: bool = True

    def apply(self, entity: Entity, rows: Sequence[Mapping[str, Any]]) -> Outcome:
        outcome = Outcome()
        if entity is PARCELS:
            self._bring_in_shipments(rows, outcome)
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]

            def work(tx: Transaction, chunk: Sequence[Mapping[str, Any]] = chunk) -> Outcome:
                return self._rows(tx, entity, chunk)

            outcome.add(self._in_transaction(work))
        return outcome

    def _in_transaction(self, work: Callable[[Transaction], Outcome]) -> Outcome:
        outcome = self.store.run_transaction(work)
        # Counted once committed: the function may run again.
        committed = self.clock()
        for key, _ in outcome.conflicts:
            metrics.sync_conflict(key.split("~", 1)[0])
        for changed_at in outcome.changed_at if self.observe_lag else ():
            metrics.sync_lag("to_meridian", (committed - changed_at).total_seconds())
        outcome.written_back = sum(self._write_back(w) for w in outcome.write_backs)
        outcome.changed_at, outcome.write_backs = [], []
        return outcome

    def _write_back(self, write: WriteBack) -> bool:
        """Write Meridian's winning values into the row as the bridge's, if the row is still at
        the version applied; whether it was."""
        query = sql.SQL("UPDATE {} SET {} WHERE id = %s AND version = %s").format(
            sql.Identifier(write.entity.table),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in write.columns),
        )
        with self.conn.transaction():
            as_meridian(self.conn)
            cursor = self.conn.execute(query, [*write.columns.values(), write.id, write.version])
        if cursor.rowcount == 1:
            log.info(
                "Meridian's values written back",
                entity=write.entity.name,
                id=write.id,
                columns=sorted(write.columns),
            )
            return True
        log.info(
            "not written back: the monolith changed the row again; the next pull merges it",
            entity=write.entity.name,
            id=write.id,
            version=write.version,
        )
        return False

    def _bring_in_shipments(self, rows: Sequence[Mapping[str, Any]], outcome: Outcome) -> None:
        """The shipments of ``rows`` Meridian does not hold yet, each with its parcels."""
        missing = sorted(
            {
                r["shipment_id"]
                for r in rows
                if self.store.get(SHIPMENTS.path(r["shipment_id"])) is None
            }
        )
        if not missing:
            return
        shipments = self.conn.execute(
            "SELECT * FROM shipments WHERE id = ANY(%s) ORDER BY id", (missing,)
        ).fetchall()
        outcome.add(self.apply(SHIPMENTS, shipments))

    def _rows(self, tx: Transaction, entity: Entity, rows: Sequence[Mapping[str, Any]]) -> Outcome:
        outcome = Outcome()
        now = self.clock()
        parcels = parcels_of(self.conn, [r["id"] for r in rows]) if entity is SHIPMENTS else {}
        # A transaction reads everything before its first write (Firestore's rule, kept by every
        # adapter): the chunk's documents, links and, for new shipments, their parcels.
        paths = [p for r in rows for p in (entity.path(r["id"]), entity.link_path(r["id"]))]
        paths += [PARCELS.path(p["id"]) for found in parcels.values() for p in found]
        seen = {path: tx.get(path) for path in dict.fromkeys(paths)}
        for row in rows:
            try:
                if entity is SHIPMENTS and seen[SHIPMENTS.path(row["id"])] is None:
                    self._new_shipment(tx, seen, row, parcels[row["id"]], now, outcome)
                else:
                    self._row(tx, seen, entity, row, now, outcome)
            except ValidationError as e:
                log.warning("row rejected", entity=entity.name, id=row["id"], error=str(e))
                outcome.rejected.append(f"{entity.name}~{row['id']}")
        return outcome

    def _written(self, row: Row, now: datetime) -> dict[str, Any]:
        """The echo markers of a document the bridge writes."""
        return {
            "updated_at": now,
            "_last_command": {"name": SYNC_COMMAND, "by": self.job, "role": SYNC_ROLE, "at": now},
            "_sync": {
                "origin": MONOLITH,
                "version": row["version"],
                "updated_at": row["updated_at"],
            },
        }

    def _link(
        self,
        tx: Transaction,
        entity: Entity,
        row: Row,
        meridian_at: datetime,
        meridian: Mapping[str, Any],
        write_back: Sequence[str] = (),
    ) -> None:
        """The row's link: the version applied, the base of the next three-way merge (the
        row's synced fields as a document, and ``meridian``: the document's after this write),
        and the fields Meridian won that the row is to be given (``write_back``)."""
        tx.set(
            entity.link_path(row["id"]),
            {
                "entity": entity.name,
                "id": row["id"],
                "legacy_version": row["version"],
                "legacy_updated_at": row["updated_at"],
                "meridian_updated_at": meridian_at,
                "checksum": row_checksum(entity, row),
                "base": Base.of(entity.to_document(row), meridian).to_link(),
                "write_back": sorted(write_back),
            },
        )

    def _new_shipment(
        self,
        tx: Transaction,
        seen: Seen,
        row: Row,
        parcel_rows: Sequence[Row],
        now: datetime,
        outcome: Outcome,
    ) -> None:
        new_parcels = [p for p in parcel_rows if seen[PARCELS.path(p["id"])] is None]
        for parcel in new_parcels:
            _valid(PARCELS, PARCELS.to_document(parcel))
        document = {
            **SHIPMENTS.to_document(row),
            "parcel_ids": [p["id"] for p in parcel_rows],
            "status": "OPEN",
            **self._written(row, now),
        }
        tx.create(SHIPMENTS.path(row["id"]), document)
        self._link(tx, SHIPMENTS, row, now, SHIPMENTS.to_document(row))
        for parcel in new_parcels:
            incoming = PARCELS.to_document(parcel)
            tx.create(PARCELS.path(parcel["id"]), {**incoming, **self._written(parcel, now)})
            self._link(tx, PARCELS, parcel, now, incoming)
            outcome.changed_at.append(parcel["updated_at"])
        outcome.created += 1 + len(new_parcels)
        outcome.changed_at.append(row["updated_at"])

    def _row(
        self,
        tx: Transaction,
        seen: Seen,
        entity: Entity,
        row: Row,
        now: datetime,
        outcome: Outcome,
    ) -> None:
        path = entity.path(row["id"])
        document, link = seen[path], seen[entity.link_path(row["id"])]
        incoming = entity.to_document(row)
        if document is None:
            _valid(entity, incoming)
            tx.create(path, {**incoming, **self._written(row, now)})
            self._link(tx, entity, row, now, incoming)
            outcome.created += 1
            outcome.changed_at.append(row["updated_at"])
            return
        current = {key: document.data.get(key) for key in incoming}
        base = None if link is None else Base.from_link(link.data)
        pending = [] if link is None else list(link.data.get("write_back", ()))
        if link is not None and link.data["legacy_version"] >= row["version"]:
            outcome.unchanged += 1  # applied already
            if base is not None and link.data["legacy_version"] == row["version"]:
                # Killed before its write-back, or run again: derive it from the link.
                still = field_digests(current)
                kept = [f for f in pending if still.get(f) == base.meridian.get(f)]
                self._plan_write_back(entity, row, incoming, current, kept, outcome)
            return
        meridian_at: datetime = document.data.get("updated_at") or now
        has_status = entity is PARCELS
        if base is not None:
            base = _as_written_back(base, incoming, pending)
            merged, decisions = merge(
                base, current, incoming, meridian_at, row["updated_at"], has_status
            )
        elif link is None or link.data["meridian_updated_at"] != meridian_at:
            merged, decisions = resolve(
                current, incoming, meridian_at, row["updated_at"], has_status
            )
        else:  # a link without a base, the document unchanged since: the monolith's fields
            merged, decisions = _never_back_from_final(current, incoming, has_status)
        missing: list[str] = []
        if has_status:
            merged, decisions, missing = keep_expressible(current, merged, document.data, decisions)
        if missing:
            log.warning(
                "the monolith's parcel status cannot be expressed in Meridian; Meridian's stands",
                id=row["id"],
                monolith=incoming["status"],
                meridian=current["status"],
                missing=missing,
            )
        if decisions:
            self._record_conflict(tx, entity, row, current, incoming, decisions, missing, now)
            outcome.conflicts.append((f"{entity.name}~{row['id']}", decisions))
        # What Meridian won by a rule (not inexpressible), and what was still to write back.
        won = {
            d.field
            for d in decisions
            if d.winner is Source.MERIDIAN and d.rule is not Rule.INEXPRESSIBLE
        } | set(pending)
        won = {f for f in won if merged.get(f) != incoming.get(f)}
        if merged == current:
            self._link(tx, entity, row, meridian_at, current, sorted(won))
            outcome.unchanged += 1
        else:
            _valid(entity, {**document.data, **merged})
            tx.set(path, {**document.data, **merged, **self._written(row, now)})
            self._link(tx, entity, row, now, merged, sorted(won))
            outcome.updated += 1
            outcome.changed_at.append(row["updated_at"])
        self._plan_write_back(entity, row, incoming, merged, sorted(won), outcome)

    def _plan_write_back(
        self,
        entity: Entity,
        row: Row,
        incoming: Mapping[str, Any],
        meridian: Mapping[str, Any],
        won: Sequence[str],
        outcome: Outcome,
    ) -> None:
        """Meridian's values of the fields it ``won``, as the row's columns that differ from
        the row's (written once the document store has committed)."""
        if not won:
            return
        target = entity.to_row({**incoming, **{f: meridian.get(f) for f in won}})
        before, after = synced_values(entity, row), synced_values(entity, target)
        columns = {c: target[c] for c in entity.columns if c != "id" and before[c] != after[c]}
        if columns:
            outcome.write_backs.append(WriteBack(entity, row["id"], row["version"], columns))

    def _record_conflict(
        self,
        tx: Transaction,
        entity: Entity,
        row: Row,
        current: Mapping[str, Any],
        incoming: Mapping[str, Any],
        decisions: Sequence[Decision],
        missing: Sequence[str],
        now: datetime,
    ) -> None:
        """Both versions, each decision (its field, winner and rule), and, when the monolith's
        status was refused as inexpressible, what Meridian's parcel would have lacked."""
        tx.set(
            f"{CONFLICTS}/{entity.name}~{row['id']}~{row['version']}",
            {
                "entity": entity.name,
                "id": row["id"],
                "legacy_version": row["version"],
                "meridian": dict(current),
                "monolith": dict(incoming),
                "decisions": [
                    {"field": d.field, "winner": d.winner.value, "rule": d.rule.value}
                    for d in decisions
                ],
                "winner": _overall(decisions),
                "inexpressible": list(missing),
                "job": self.job,
                "recorded_at": now,
            },
        )


def _as_written_back(base: Base, incoming: Mapping[str, Any], pending: Sequence[str]) -> Base:
    """The base, with each field the link had to write back counted as the monolith's own where
    the row holds Meridian's value for it: written back (or set so by the monolith), it is no
    change of the monolith's to merge."""
    if not pending:
        return base
    now = field_digests({f: incoming.get(f) for f in pending if f in incoming})
    monolith = dict(base.monolith)
    for f, digest in now.items():
        if digest == base.meridian.get(f):
            monolith[f] = digest
    return Base(monolith, base.meridian)


def _overall(decisions: Sequence[Decision]) -> str:
    winners = {d.winner for d in decisions}
    return winners.pop().value if len(winners) == 1 else "both"


def _never_back_from_final(
    current: Mapping[str, Any], incoming: Mapping[str, Any], has_status: bool
) -> tuple[dict[str, Any], list[Decision]]:
    """The monolith's fields, but a delivered or returned parcel keeps its status (and what
    goes with it)."""
    merged = dict(incoming)
    if not has_status or current.get("status") == incoming.get("status"):
        return merged, []
    if ParcelStatus(current["status"]) not in TERMINAL_STATES:
        return merged, []
    decisions = []
    for key in STATUS_FIELDS:
        if current.get(key) != incoming.get(key):
            merged[key] = current.get(key)
            decisions.append(Decision(key, Source.MERIDIAN, Rule.FINAL_STATE))
    return merged, sorted(decisions, key=lambda d: d.field)


_MODELS: dict[str, type[Parcel] | type[Driver]] = {"parcels": Parcel, "drivers": Driver}


def _valid(entity: Entity, document: Mapping[str, Any]) -> None:
    """ValidationError when the document would not be a valid Meridian record."""
    model = _MODELS.get(entity.name)
    if model is not None:
        model.model_validate({k: v for k, v in document.items() if k in model.model_fields})


def apply_request(
    store: DocumentStore,
    conn: Connection,
    entity: Entity,
    request: SyncRequested,
    job: str,
    page_size: int,
    clock: Callable[[], datetime],
) -> Outcome:
    """Apply every row the request names."""
    applier = Applier(store, conn, job, clock)
    outcome = Outcome()
    for rows in read_rows(conn, entity, request, page_size):
        outcome.add(applier.apply(entity, rows))
    return outcome
