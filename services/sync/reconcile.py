"""Reconciliation that fails loudly: do the monolith and Meridian hold the same records?

Per entity, the monolith's rows and Meridian's documents are compared by the checksum of their
synced fields (``services.sync.entities``: ``row_checksum`` equals ``document_checksum`` exactly
when every synced field agrees), in pages, never a whole table in memory:

1. **The monolith's side.** Its rows in keyset pages on ``id`` (the primary key's order, so each
   page is an index range), each page's documents and ``sync_links`` fetched by path in one
   batched read (Firestore's ``get_all``: no query, no index). A row with no document is
   *missing in Meridian*; a row whose document's synced fields differ has *fields that differ*,
   each shown with both values.
2. **Meridian's side** (a whole-entity run only). Its documents in keyset pages on the id field;
   those the bridge brought (a link names them) whose row is gone are *missing in the monolith*.
   A document Meridian created itself (no link) is counted as ``native``, not a difference: the
   bridge never applied it. (The legacy writer inserts the rows of Meridian's own shipments, their
   parcels and clients into the monolith; those rows are compared from the monolith's side.)

**The in-flight window** (``MERIDIAN_SYNC_IN_FLIGHT_S``, ``--in-flight``): a record may differ
because its change is still on its way across. A difference is *in flight*, and not counted,
when the side that changed did so within the window and the bridge has not carried it yet: the
row's version is newer than the one its link says was applied, or the document was written after
the bridge's last write of it (its ``updated_at`` is not the link's). A row the bridge applied at
its current version that still differs is a difference however recent: nothing is on its way.

**The report** (``Reconciliation``) lists which ids differ and how (up to ``LISTED`` of them; all
are counted), per entity the counts of each side, what matched, what was in flight and what is
native. It is saved as ``sync_reconciliations/{id}`` and as ``sync_reconciliations/latest``
(``meridian sync status`` shows it). The ``sync-reconcile`` job checks what its request names (its
ids, or the rows within its page's bounds; the whole entity when it names neither), saves the
report under the request's id, logs each difference and ends with a one-line summary naming the
first ones, exiting 1 when there is any: the workflow then ends in ``SyncError`` with that line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from psycopg import sql

from meridian import adapters, metrics
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.events import SyncRequested
from meridian.observability import get_logger
from meridian.ports import Document, DocumentStore, JsonValue, Query, Transaction
from services.sync import legacy
from services.sync.apply import read_rows
from services.sync.entities import ENTITIES, Entity, Row, entity, synced_values
from services.sync.envelope import decode_argument
from services.sync.legacy import Connection

log = get_logger(__name__)

JOB = "sync-reconcile"
REPORTS = "sync_reconciliations"
LATEST = f"{REPORTS}/latest"
LISTED = 500  # differences a report lists (a document stays well under Firestore's 1 MiB)
LOGGED = 20  # differences the job logs one by one; the report holds the rest


class Kind(StrEnum):
    MISSING_IN_MERIDIAN = "missing_in_meridian"
    MISSING_IN_MONOLITH = "missing_in_monolith"
    FIELDS_DIFFER = "fields_differ"


@dataclass(frozen=True)
class FieldDifference:
    """One synced field, as each side spells it (the checksum's canonical form)."""

    field: str
    monolith: JsonValue
    meridian: JsonValue


@dataclass(frozen=True)
class Difference:
    entity: str
    id: str
    kind: Kind
    fields: tuple[FieldDifference, ...] = ()

    def describe(self) -> str:
        if self.kind is not Kind.FIELDS_DIFFER:
            return f"{self.entity} {self.id}: {self.kind.value.replace('_', ' ')}"
        shown = "; ".join(
            f"{f.field} monolith {f.monolith!r} != meridian {f.meridian!r}" for f in self.fields
        )
        return f"{self.entity} {self.id}: {shown}"


@dataclass
class Tally:
    """One entity's figures: records on each side (of what was compared), and what became of
    them."""

    monolith: int = 0
    meridian: int = 0
    matched: int = 0
    in_flight: int = 0
    native: int = 0
    differences: int = 0


@dataclass
class Reconciliation:
    """A reconciliation's report."""

    report_id: str
    scope: str  # "all", or "request <id>"
    in_flight_s: float
    started_at: datetime
    finished_at: datetime | None = None
    tallies: dict[str, Tally] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)  # the first LISTED

    @property
    def total_differences(self) -> int:
        return sum(t.differences for t in self.tallies.values())

    @property
    def ok(self) -> bool:
        return self.total_differences == 0

    def found(self, difference: Difference) -> None:
        self.tallies[difference.entity].differences += 1
        if len(self.differences) < LISTED:
            self.differences.append(difference)

    def summary(self) -> str:
        """One line: the verdict, the first differences, where the report is."""
        where = f"report {REPORTS}/{self.report_id}"
        if self.ok:
            compared = sum(t.monolith for t in self.tallies.values())
            in_flight = sum(t.in_flight for t in self.tallies.values())
            return (
                f"reconciliation: monolith and Meridian agree ({compared} rows compared, "
                f"{in_flight} in flight); {where}"
            )
        first = "; ".join(d.describe() for d in self.differences[:3])
        more = self.total_differences - min(3, len(self.differences))
        return (
            f"reconciliation: {self.total_differences} difference(s) beyond the "
            f"{self.in_flight_s:g} s in-flight window: {first}"
            + (f" (and {more} more)" if more > 0 else "")
            + f"; {where}"
        )

    def to_document(self) -> dict[str, JsonValue]:
        return {
            "report_id": self.report_id,
            "scope": self.scope,
            "in_flight_s": self.in_flight_s,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "ok": self.ok,
            "total_differences": self.total_differences,
            "tallies": {name: asdict(tally) for name, tally in self.tallies.items()},
            "differences": [
                {
                    "entity": d.entity,
                    "id": d.id,
                    "kind": d.kind.value,
                    "fields": [asdict(f) for f in d.fields],
                }
                for d in self.differences
            ],
        }

    @classmethod
    def from_document(cls, data: Mapping[str, Any]) -> Reconciliation:
        return cls(
            report_id=data["report_id"],
            scope=data["scope"],
            in_flight_s=float(data["in_flight_s"]),
            started_at=data["started_at"],
            finished_at=data.get("finished_at"),
            tallies={name: Tally(**tally) for name, tally in data["tallies"].items()},
            differences=[
                Difference(
                    d["entity"],
                    d["id"],
                    Kind(d["kind"]),
                    tuple(FieldDifference(**f) for f in d["fields"]),
                )
                for d in data["differences"]
            ],
        )


class Progress(Protocol):
    """Told what is being checked (``total`` records, when known) and how far it has got."""

    def start(self, label: str, total: int | None) -> None: ...

    def advance(self, count: int) -> None: ...


class Silent:
    """No progress shown."""

    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


# Comparing ------------------------------------------------------------------------------------


def _written_at(document: Document) -> datetime:
    updated = document.data.get("updated_at")
    return updated if isinstance(updated, datetime) else document.update_time


@dataclass(frozen=True)
class _Pair:
    """A row, its document and its link, as read together."""

    row: Row | None
    document: Document | None
    link: Document | None

    def monolith_pending(self, cutoff: datetime) -> bool:
        """The row changed within the window at a version the bridge has not applied yet."""
        if self.row is None or self.row["updated_at"] <= cutoff:
            return False
        applied = -1 if self.link is None else int(self.link.data.get("legacy_version", -1))
        return applied < int(self.row["version"])

    def meridian_pending(self, cutoff: datetime) -> bool:
        """The document changed within the window, after the bridge's last write of it."""
        if self.document is None:
            return False
        written = _written_at(self.document)
        if written <= cutoff:
            return False
        return self.link is None or self.link.data.get("meridian_updated_at") != written

    def in_flight(self, cutoff: datetime) -> bool:
        return self.monolith_pending(cutoff) or self.meridian_pending(cutoff)


def field_differences(target: Entity, row: Row, document: Document) -> tuple[FieldDifference, ...]:
    """The synced fields on which ``row`` and ``document`` disagree (none: they agree)."""
    theirs = synced_values(target, row)
    try:
        ours = synced_values(target, target.to_row(document.data))
    except (KeyError, TypeError, AttributeError) as e:
        # A document the mapping cannot read: every field differs, and the report says why.
        unreadable = f"<unreadable: {type(e).__name__} {e}>"
        return tuple(FieldDifference(c, theirs[c], unreadable) for c in target.columns)
    return tuple(
        FieldDifference(column, theirs[column], ours[column])
        for column in target.columns
        if theirs[column] != ours[column]
    )


class Reconciler:
    """Compares ``store`` (Meridian) with the monolith over ``conn``."""

    def __init__(
        self,
        store: DocumentStore,
        conn: Connection,
        *,
        in_flight: timedelta,
        page_size: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Progress | None = None,
    ) -> None:
        self.store, self.conn, self.page_size, self.clock = store, conn, page_size, clock
        self.in_flight = in_flight
        self.progress: Progress = progress or Silent()

    def everything(self, report_id: str, names: Iterable[str] = ENTITIES) -> Reconciliation:
        """Every record of each entity named, both ways."""
        report = self._report(report_id, "all")
        cutoff = report.started_at - self.in_flight
        for name in names:
            target = entity(name)
            report.tallies[target.name] = Tally()
            total = self._count(target)
            self.progress.start(f"{target.name}: the monolith's rows", total)
            for rows in self._row_pages(target):
                self._compare_rows(report, target, rows, cutoff)
                self.progress.advance(len(rows))
            self.progress.start(f"{target.name}: Meridian's documents", None)
            for documents in self._document_pages(target):
                self._compare_documents(report, target, documents, cutoff)
                self.progress.advance(len(documents))
            metrics.sync_differences(target.name, report.tallies[target.name].differences)
        report.finished_at = self.clock()
        return report

    def request(self, request: SyncRequested, report_id: str) -> Reconciliation:
        """The rows ``request`` names: its ids (each looked for on both sides), or the rows
        within its page's bounds; the whole entity when it names neither."""
        target = entity(request.entity)
        if not request.ids and request.through_updated_at is None:
            return self.everything(report_id, [target.name])
        report = self._report(report_id, f"request {request.request_id}")
        cutoff = report.started_at - self.in_flight
        tally = report.tallies[target.name] = Tally()
        self.progress.start(f"{target.name}: request {request.request_id}", None)
        seen: set[str] = set()
        for rows in read_rows(self.conn, target, request, self.page_size):
            seen.update(str(r["id"]) for r in rows)
            tally.meridian += self._compare_rows(report, target, rows, cutoff)
            self.progress.advance(len(rows))
        gone = sorted(set(request.ids) - seen)
        for chunk in _chunks(gone, self.page_size):
            read = self.store.get_all([target.path(i) for i in chunk])
            documents = [d for d in read.values() if d is not None]
            self._compare_documents(report, target, documents, cutoff, known_missing=True)
        metrics.sync_differences(target.name, tally.differences)
        report.finished_at = self.clock()
        return report

    def _report(self, report_id: str, scope: str) -> Reconciliation:
        return Reconciliation(report_id, scope, self.in_flight.total_seconds(), self.clock())

    def _count(self, target: Entity) -> int:
        query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(target.table))
        found = self.conn.execute(query).fetchone()
        return int(found["n"]) if found else 0

    def _row_pages(self, target: Entity) -> Iterator[list[dict[str, Any]]]:
        """The monolith's rows in keyset pages on id."""
        query = sql.SQL("SELECT * FROM {} WHERE id > %s ORDER BY id LIMIT %s").format(
            sql.Identifier(target.table)
        )
        after = ""
        while True:
            rows = self.conn.execute(query, (after, self.page_size)).fetchall()
            if rows:
                yield rows
            if len(rows) < self.page_size:
                return
            after = rows[-1]["id"]

    def _document_pages(self, target: Entity) -> Iterator[list[Document]]:
        """Meridian's documents of the entity in keyset pages on its id field."""
        after = ""
        while True:
            page = self.store.query(
                Query(target.collection)
                .where(target.id_field, ">", after)
                .order_by(target.id_field)
                .limit(self.page_size)
            )
            if page:
                yield page
            if len(page) < self.page_size:
                return
            after = str(page[-1].data[target.id_field])

    def _compare_rows(
        self, report: Reconciliation, target: Entity, rows: Sequence[Row], cutoff: datetime
    ) -> int:
        """Each row with its document; how many of the rows have one."""
        tally = report.tallies[target.name]
        ids = [str(r["id"]) for r in rows]
        read = self.store.get_all(
            [target.path(i) for i in ids] + [target.link_path(i) for i in ids]
        )
        found = 0
        for row in rows:
            row_id = str(row["id"])
            pair = _Pair(row, read[target.path(row_id)], read[target.link_path(row_id)])
            tally.monolith += 1
            found += pair.document is not None
            if pair.document is None:
                difference = Difference(target.name, row_id, Kind.MISSING_IN_MERIDIAN)
            else:
                fields = field_differences(target, row, pair.document)
                if not fields:
                    tally.matched += 1
                    continue
                difference = Difference(target.name, row_id, Kind.FIELDS_DIFFER, fields)
            if pair.in_flight(cutoff):
                tally.in_flight += 1
            else:
                report.found(difference)
        return found

    def _compare_documents(
        self,
        report: Reconciliation,
        target: Entity,
        documents: Sequence[Document],
        cutoff: datetime,
        *,
        known_missing: bool = False,
    ) -> None:
        """Meridian's side: each document the bridge brought must still have its row (the
        rows themselves were compared from the monolith's side)."""
        tally = report.tallies[target.name]
        links = self.store.get_all([target.link_path(d.id) for d in documents])
        linked = [d for d in documents if links[target.link_path(d.id)] is not None]
        tally.native += len(documents) - len(linked)
        tally.meridian += len(documents)
        if not linked:
            return
        if known_missing:
            present: set[str] = set()
        else:
            query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(
                sql.Identifier(target.table)
            )
            present = {r["id"] for r in self.conn.execute(query, ([d.id for d in linked],))}
        for document in linked:
            if document.id in present:
                continue
            pair = _Pair(None, document, links[target.link_path(document.id)])
            if pair.in_flight(cutoff):
                tally.in_flight += 1
            else:
                report.found(Difference(target.name, document.id, Kind.MISSING_IN_MONOLITH))


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    iterator = iter(values)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# The report's home ----------------------------------------------------------------------------


def save_report(store: DocumentStore, report: Reconciliation) -> None:
    """The report under its id and as the latest, in one transaction."""
    document = report.to_document()

    def write(tx: Transaction) -> None:
        tx.set(f"{REPORTS}/{report.report_id}", document)
        tx.set(LATEST, document)

    store.run_transaction(write)


def latest_report(store: DocumentStore) -> Reconciliation | None:
    found = store.get(LATEST)
    return None if found is None else Reconciliation.from_document(found.data)


def log_report(report: Reconciliation) -> None:
    """The report's figures and its first differences as structured logs (what Cloud Logging
    keeps of a job's run)."""
    for name, tally in report.tallies.items():
        log.info("reconciled", report=report.report_id, entity=name, **asdict(tally))
    for difference in report.differences[:LOGGED]:
        log.warning(
            "reconciliation difference",
            report=report.report_id,
            entity=difference.entity,
            id=difference.id,
            kind=difference.kind.value,
            fields=[asdict(f) for f in difference.fields],
        )


def sync_reconcile(argument: str, settings: Settings) -> int:
    """Job entry point (``meridian job run sync-reconcile ARGUMENT``): 1 on any difference."""
    request = decode_argument(argument, EventCodec(load_catalog()))
    store = adapters.document_store(settings, service=JOB)
    with legacy.connect(settings, autocommit=True) as conn:
        report = Reconciler(
            store,
            conn,
            in_flight=timedelta(seconds=settings.legacy.in_flight_s),
            page_size=settings.legacy.page_size,
        ).request(request, request.request_id)
    save_report(store, report)
    log_report(report)
    # The last line of the job's output: the workflow's SyncError carries it as the reason.
    print(report.summary(), flush=True)
    return 0 if report.ok else 1
