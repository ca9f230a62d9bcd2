"""The embedded DocumentStore: Firestore's semantics on one SQLite file in WAL mode.

One file is one store (``stores.py`` gives each owning service its own, and routes a service's
reads and writes to them); a store opened ``read_only`` reads and listens on another owner's file
and never takes its write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from meridian.documents.ownership import NotOwned
from meridian.documents.paths import check_document, check_document_path, collection_id
from meridian.documents.values import apply_merge, apply_update, clone, get_field, to_micros
from meridian.domain.errors import AlreadyExists, NotFound, ValidationError
from meridian.embedded.sqlite import process_write_lock
from meridian.ports import Document, DocumentStore, JsonValue, Query, Snapshot, Transaction

from . import changelog, db, listeners
from .changelog import ChangeLog
from .checkpoints import Checkpointer
from .query import expression, run_query
from .values import DecodedDocuments, changed_paths, decode, encode, from_micros

T = TypeVar("T")

# The fields the platform's services query on (status boards, a shipment's parcels); each gets a
# JSON1 expression index per collection. Every index costs each write a JSON parse (see
# BENCHMARKS.md), so pass ``indexed_fields`` to add only what a deployment queries.
DEFAULT_INDEXED_FIELDS: tuple[str, ...] = ("status", "shipment_id")

Write = tuple[str, str, Mapping[str, JsonValue] | None]
_OPS = {"create", "set", "merge", "update", "delete"}


def _now_micros() -> int:
    return time.time_ns() // 1000


class EmbeddedDocumentStore(DocumentStore):
    """Documents in ``<data_dir>/<filename>``, shared safely by every process that opens it.

    ``ttl_fields`` maps a collection id (the last segment of a collection path, as a Firestore TTL
    policy names a collection group) to its expiry field; ``sweep_expired`` deletes documents whose
    expiry has passed, producing normal delete changes. ``change_retention`` bounds the change log.
    ``rereads=False`` is for a process that seldom reads a document back soon after writing it
    (the command service: a parcel moves minutes apart): it keeps no decoded documents.
    ``read_only=True`` opens another owner's file: its connections are ``query_only``, it runs no
    WAL checkpoints, and every write raises ReadOnlyStore (a WAL reader never waits for, nor
    holds, the writer's lock). It creates the schema only if the file has none yet (an owner
    that has not started).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        indexed_fields: Sequence[str] = DEFAULT_INDEXED_FIELDS,
        ttl_fields: Mapping[str, str] | None = None,
        change_retention: timedelta = timedelta(hours=24),
        busy_timeout_ms: int = 5000,
        filename: str = "docstore.sqlite3",
        rereads: bool = True,
        read_only: bool = False,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.file = data_dir / filename
        self.read_only = read_only
        self._write_lock = process_write_lock(self.file)
        self.ttl_fields = dict(ttl_fields or {})
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Decoded values of the documents this process wrote or read last, for the next
        # read-modify-write of the same document (``rereads``; see DecodedDocuments).
        self._decoded = DecodedDocuments() if rereads else DecodedDocuments(max_chars=0)
        self._hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, listeners.CommitHub] = (
            weakref.WeakKeyDictionary()
        )
        if not read_only:
            db.initialise(self._conn(), [(f, expression(f)) for f in indexed_fields])
        elif not db.has_schema(self._conn()):
            creating = db.connect(self.file, busy_timeout_ms)
            try:
                db.initialise(creating, [])
            finally:
                creating.close()
        self.changes = ChangeLog(self._conn, change_retention)
        self._checkpointer = None if read_only else Checkpointer.serve(self)

    # connections ---------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection to the store's file (listeners keep one of their own)."""
        conn = db.connect(self.file, self.busy_timeout_ms)
        if self.read_only:
            conn.execute("PRAGMA query_only = 1")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: threads of one process then contend like separate clients.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        return conn

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.release(self)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    # reads ---------------------------------------------------------------------------------

    def get(self, path: str) -> Document | None:
        check_document_path(path)
        return read_document(self._conn(), path)

    def get_all(self, paths: Sequence[str]) -> dict[str, Document | None]:
        unique = list(dict.fromkeys(paths))
        for path in unique:
            check_document_path(path)
        found: dict[str, Document | None] = dict.fromkeys(unique)
        conn = self._conn()
        for start in range(0, len(unique), 500):  # well under SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            rows = conn.execute(
                "SELECT path, data, create_time, update_time FROM documents"
                f" WHERE path IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for path, data, created, updated in rows:
                found[path] = row_document(path, (data, created, updated))
        return found

    def query(self, query: Query) -> list[Document]:
        return run_query(self._conn(), query)

    # writes --------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStore(
                f"{self.file} is opened read-only here: it is another service's store "
                "(schemas/catalog.yaml, stores:); write it through its owner"
            )

    def _commit(self, writes: Sequence[Write], attempts: int = 5) -> list[Document | None]:
        self._writable()
        return db.in_write_transaction(
            self._conn(),
            lambda conn: self._apply(conn, writes),
            attempts=attempts,
            lock=self._write_lock,
        )

    # Each write is checked where it enters the store (here, or when a transaction buffers it),
    # so ``_apply`` does not check it again.

    def create(self, path: str, data: Mapping[str, JsonValue]) -> Document:
        return self._commit_one("create", path, data)

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> Document:
        return self._commit_one("merge" if merge else "set", path, data)

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> Document:
        return self._commit_one("update", path, fields)

    def delete(self, path: str) -> None:
        _check_write("delete", path, None)
        self._commit([("delete", path, None)])

    def _commit_one(self, op: str, path: str, data: Mapping[str, JsonValue]) -> Document:
        _check_write(op, path, data)
        document = self._commit([(op, path, data)])[0]
        assert document is not None, f"a write to {path} returned no document"
        return document

    def batch_write(self, writes: Sequence[Write]) -> None:
        for op, path, data in writes:
            _check_write(op, path, data)
        self._commit(writes)

    def run_transaction(self, function: Callable[[Transaction], T], max_attempts: int = 5) -> T:
        self._writable()
        return db.in_write_transaction(
            self._conn(),
            lambda conn: self._run_in(conn, function),
            attempts=max_attempts,
            lock=self._write_lock,
        )

    def _run_in(
        self,
        conn: sqlite3.Connection,
        function: Callable[[Transaction], T],
        commit_time: int | None = None,
    ) -> T:
        """Run a transaction function and apply its writes, inside an open write transaction."""
        transaction = EmbeddedTransaction(conn, self._decoded)
        result = function(transaction)
        self._apply(
            conn,
            transaction.writes,
            transaction.rows,
            transaction.read,
            copy=False,
            results=False,
            commit_time=commit_time,
        )
        return result

    def run_transactions(
        self, functions: Sequence[Callable[[Transaction], T]], max_attempts: int = 5
    ) -> list[T | BaseException]:
        """Run several independent transaction functions in one SQLite commit (group commit).

        Each function is atomic on its own: one that raises is rolled back alone and its
        exception is returned in its place; the others commit together. Same isolation as
        running them one after another (they are, under one write lock), one COMMIT instead
        of many: what a busy command service does with the requests that arrived together.
        An adapter method, not the port's: ``meridian.adapters.transactions`` hands it to the
        group commit (``meridian.concurrency.group_commit``) of services on this store."""
        self._writable()
        try:
            return db.in_write_transaction(
                self._conn(),
                lambda conn: self._run_group(conn, functions, guarded=False),
                attempts=max_attempts,
                lock=self._write_lock,
            )
        except _PartlyWritten:
            return db.in_write_transaction(
                self._conn(),
                lambda conn: self._run_group(conn, functions, guarded=True),
                attempts=max_attempts,
                lock=self._write_lock,
            )

    def _run_group(
        self,
        conn: sqlite3.Connection,
        functions: Sequence[Callable[[Transaction], T]],
        guarded: bool,
    ) -> list[T | BaseException]:
        """One attempt at a group commit, inside an open write transaction.

        A function writes nothing to SQLite until its last step (``_apply``'s statements), and
        all it can refuse (its own exceptions, NotFound, AlreadyExists, limits) is refused
        before that: so a function that raises has, nearly always, nothing to roll back, and
        the group runs without a savepoint per function (two statements each). When one fails
        after its rows went in (an SQLite error), the group is rolled back and run again
        ``guarded``: each function in a savepoint, rolled back alone."""
        outcomes: list[T | BaseException] = []
        # Each function gets a commit time of its own, later than the one before, as if
        # committed one after another; the last one is known here, not read back each time.
        last = changelog.last_commit_time(conn)
        for function in functions:
            if guarded:
                conn.execute("SAVEPOINT one")
            written = conn.total_changes
            try:
                commit_time = max(_now_micros(), last + 1)
                result = self._run_in(conn, function, commit_time)
                last = commit_time
            except Exception as e:
                if isinstance(e, sqlite3.OperationalError) and db.is_busy(e):
                    raise  # the whole group is retried
                if guarded:
                    conn.execute("ROLLBACK TO one")
                elif isinstance(e, sqlite3.Error) or conn.total_changes != written:
                    raise _PartlyWritten() from e
                outcomes.append(e)
            else:
                outcomes.append(result)
            if guarded:
                conn.execute("RELEASE one")
        return outcomes

    def _apply(
        self,
        conn: sqlite3.Connection,
        writes: Sequence[Write],
        rows: dict[str, Row | None] | None = None,
        read: Mapping[str, dict[str, Any]] | None = None,
        copy: bool = True,
        results: bool = True,
        commit_time: int | None = None,
    ) -> list[Document | None]:
        """Apply writes inside an open write transaction, with one commit time and a change
        record per effective write. No-op writes change nothing and record nothing (as Firestore
        emits no event for them). ``results=False`` (transactions, which return nothing) skips
        building the written Documents; ``commit_time`` is given when the caller already knows
        the last one (group commit)."""
        if commit_time is None:
            commit_time = max(_now_micros(), changelog.last_commit_time(conn) + 1)
        written: list[Document | None] = []
        # What this commit sees of each document: the rows the transaction read under this same
        # lock (still current: no second SELECT, and no second decode of what it read), then what
        # the commit's own earlier writes left. The table is written once at the end, one
        # statement run over many rows (executemany) costing less per row than one each.
        known = dict(rows or {})
        decoded = dict(read or {})
        documents: dict[str, tuple[Any, ...] | None] = {}  # path: its final row, None if deleted
        changes: list[tuple[Any, ...]] = []
        for op, path, data in writes:
            collection = check_document_path(path)
            row = known[path] if path in known else read_row(conn, path)
            old_json, created = (row[0], row[1]) if row else (None, None)
            if path in decoded:
                old = decoded[path]
            elif old_json is None:
                old = None
            else:
                # A write without a read first (a reactor's merge into its projection) finds
                # the row this process wrote last decoded already. Shared, so only read here:
                # ``_new_value`` builds the new value without changing it.
                old = self._decoded.decode(path, old_json)
            if op == "create" and old is not None:
                raise AlreadyExists(path)
            if op == "update" and old is None:
                raise NotFound(path)
            new = _new_value(op, old, data, copy)
            if new is None:
                if old is not None:
                    known[path] = documents[path] = None
                    decoded.pop(path, None)
                    self._decoded.forget(path)
                    changes.append(
                        changelog.change(path, collection, old_json, None, [], created, commit_time)
                    )
                written.append(None)
                continue
            mask = changed_paths(old, new) if old is not None else []
            if row is not None and old is not None and not mask:
                written.append(row_document(path, row) if results else None)
                continue
            new_json = encode(new)
            check_document(path, new, new_json)
            created = created if created is not None else commit_time
            known[path] = (new_json, created, commit_time)
            decoded[path] = new
            documents[path] = (
                path,
                collection,
                new_json,
                created,
                commit_time,
                self._expiry(collection, new),
            )
            changes.append(
                changelog.change(path, collection, old_json, new_json, mask, created, commit_time)
            )
            if results:
                written.append(Document(path, new, from_micros(created), from_micros(commit_time)))
            else:
                # Handed to no caller, so it may be shared: the next transaction that reads this
                # document back (the usual read-modify-write) need not decode it.
                self._decoded.remember(path, new_json, new)
        conn.executemany(
            "INSERT INTO documents (path, collection, data, create_time, update_time, expire_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET data = excluded.data,"
            " create_time = excluded.create_time, update_time = excluded.update_time,"
            " expire_at = excluded.expire_at",
            [document for document in documents.values() if document is not None],
        )
        deleted = [(path,) for path, document in documents.items() if document is None]
        if deleted:
            conn.executemany("DELETE FROM documents WHERE path = ?", deleted)
        changelog.record(conn, changes)
        return written

    def _expiry(self, collection: str, data: Mapping[str, Any]) -> int | None:
        field = self.ttl_fields.get(collection_id(collection)) if self.ttl_fields else None
        if field is None:
            return None
        value = get_field(data, field)
        # Only a timestamp expires a document; any other type (or none) never does (§7.5).
        return to_micros(value) if isinstance(value, datetime) else None

    # TTL -----------------------------------------------------------------------------------

    def sweep_expired(self, now: datetime | None = None, batch: int = 500) -> int:
        """Delete documents whose TTL field is in the past, as normal deletes (each one a
        change record). Returns how many were deleted."""
        cutoff = to_micros(now or datetime.now().astimezone())
        deleted = 0
        while True:

            def one_batch(conn: sqlite3.Connection) -> int:
                paths = [
                    r[0]
                    for r in conn.execute(
                        "SELECT path FROM documents WHERE expire_at <= ? LIMIT ?", (cutoff, batch)
                    )
                ]
                self._apply(conn, [("delete", p, None) for p in paths])
                return len(paths)

            count = db.in_write_transaction(self._conn(), one_batch, lock=self._write_lock)
            deleted += count
            if count < batch:
                return deleted

    async def run_maintenance(self, interval_s: float = 1.0) -> None:
        """Sweep expired documents and prune the change log every ``interval_s`` (run one per
        data directory, e.g. in the platform process)."""
        while True:
            await asyncio.to_thread(self.sweep_expired)
            await asyncio.to_thread(self.changes.prune)
            await asyncio.sleep(interval_s)

    # listeners -----------------------------------------------------------------------------

    def hub(self) -> listeners.CommitHub:
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            hub = self._hubs[loop] = listeners.CommitHub(
                lambda: db.connect(self.file, self.busy_timeout_ms)
            )
        return hub

    def watch_document(self, path: str) -> AsyncIterator[Snapshot]:
        check_document_path(path)
        return listeners.watch_document(self, path)

    def watch_query(self, query: Query) -> AsyncIterator[Snapshot]:
        return listeners.watch_query(self, query)


Row = tuple[str, int, int]


class ReadOnlyStore(NotOwned):
    """A write to a store this process opened read-only (another owner's)."""


class _PartlyWritten(Exception):
    """A function of a group commit failed with some of its rows written: the group is run
    again with a savepoint per function."""


def read_row(conn: sqlite3.Connection, path: str) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT data, create_time, update_time FROM documents WHERE path = ?", (path,)
    ).fetchone()
    return row


def read_document(conn: sqlite3.Connection, path: str) -> Document | None:
    return row_document(path, read_row(conn, path))


def row_document(path: str, row: Row | None) -> Document | None:
    if row is None:
        return None
    return Document(path, decode(row[0]) or {}, from_micros(row[1]), from_micros(row[2]))


def _check_write(op: str, path: str, data: Mapping[str, Any] | None) -> None:
    if op not in _OPS:
        raise ValidationError(
            f"unknown write operation {op!r}; use one of {', '.join(sorted(_OPS))}"
        )
    if op != "delete" and type(data) is not dict and not isinstance(data, Mapping):
        raise ValidationError(f"a {op} of {path} needs a mapping of fields")
    check_document_path(path)


def _new_value(
    op: str, old: dict[str, Any] | None, data: Mapping[str, Any] | None, copy: bool = True
) -> dict[str, Any] | None:
    if op == "delete" or data is None:
        return None
    if op == "merge":
        return apply_merge(old or {}, data)
    if op == "update":
        return apply_update(old or {}, data)
    # A deep copy, so later edits by the caller cannot leak into the Document returned; inside a
    # transaction nothing is returned and the data is serialised at once, so no copy is needed.
    return clone(data) if copy else dict(data)


class EmbeddedTransaction(Transaction):
    """Reads run under the write lock taken by BEGIN IMMEDIATE; writes are buffered until the
    transaction function returns."""

    def __init__(self, conn: sqlite3.Connection, decoded: DecodedDocuments) -> None:
        self._conn = conn
        self._decoded = decoded
        self.writes: list[Write] = []
        self.rows: dict[str, Row | None] = {}
        # What each read returned, decoded once: the caller gets a copy (theirs to change), and
        # the commit compares against this one instead of decoding the row a second time.
        self.read: dict[str, dict[str, Any]] = {}

    def _before_read(self) -> None:
        if self.writes:
            raise ValidationError("a transaction must do all its reads before any write")

    def get(self, path: str) -> Document | None:
        self._before_read()
        check_document_path(path)
        row = self.rows[path] = read_row(self._conn, path)
        if row is None:
            return None
        data = self.read[path] = self._decoded.decode(path, row[0])
        return Document(path, clone(data), from_micros(row[1]), from_micros(row[2]))

    def query(self, query: Query) -> list[Document]:
        self._before_read()
        return run_query(self._conn, query)

    def _write(self, op: str, path: str, data: Mapping[str, Any] | None) -> None:
        _check_write(op, path, data)
        if data is not None:
            data = clone(data)  # snapshot the caller's dict now, as Firestore does
        self.writes.append((op, path, data))

    def create(self, path: str, data: Mapping[str, JsonValue]) -> None:
        self._write("create", path, data)

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> None:
        self._write("merge" if merge else "set", path, data)

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> None:
        self._write("update", path, fields)

    def delete(self, path: str) -> None:
        self._write("delete", path, None)
