"""The SQLite file: connection settings, schema, and the write-transaction retry loop.

Every process opens the file itself. WAL lets readers run beside the one writer; ``busy_timeout``
makes a writer wait its turn for the lock instead of failing at once; ``BEGIN IMMEDIATE`` takes
the write lock before the first read of a write transaction, which makes it serializable (the
pessimistic locking of Firestore's server SDKs, reference §7.1) and avoids the deadlock of two
readers both upgrading to writers.

A thread that must never wait for the lock (an event loop: while it waits nothing else of its
process runs) runs its transaction ``without_waiting``: it takes the lock only if it is free at
once, and otherwise gets ``LockBusy`` with nothing run, to hand the work to a thread that may wait.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from meridian.domain.errors import TransactionContention

T = TypeVar("T")
log = logging.getLogger("meridian.docstore")

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    data TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    expire_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_by_collection ON documents (collection, path);
CREATE INDEX IF NOT EXISTS documents_by_expiry ON documents (expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    old_data TEXT,
    new_data TEXT,
    update_mask TEXT,
    create_time INTEGER,
    commit_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"""


def json_path(field_path_parts: Iterable[str]) -> str:
    """The JSON1 path of a field (``$."a"."b"``); one spelling, so expression indexes match."""
    return "$" + "".join('."' + p.replace('"', '""') + '"' for p in field_path_parts)


def index_name(field_path: str, version: int = 2) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in field_path)
    # crc32, not hash(): the name must be the same in every process.
    name = f"documents_field_{safe}_{zlib.crc32(field_path.encode()):08x}"
    return name if version == 1 else f"{name}_v{version}"


class Connection(sqlite3.Connection):
    """A connection made by ``connect``: it knows its file, and keeps the connection of the same
    thread to the same file that ``without_waiting`` writes through (``impatient``)."""

    file: Path
    _impatient: Connection | None = None

    def impatient(self) -> Connection:
        """The same file with a busy timeout of 0: a write transaction there takes the lock at
        once or fails at once. A second connection rather than the busy timeout set to 0 and back
        around each try, which cost two statements (~4 µs) a group; opened on first use."""
        if self._impatient is None:
            self._impatient = connect(self.file, 0)
        return self._impatient

    def close(self) -> None:
        if self._impatient is not None:
            self._impatient.close()
            self._impatient = None
        super().close()


def connect(path: Path, busy_timeout_ms: int) -> Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so the sqlite3 module never opens a
    # transaction behind our back. check_same_thread=False only so that close() may run from
    # another thread; each connection is otherwise used by the one thread that opened it.
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        timeout=busy_timeout_ms / 1000,
        check_same_thread=False,
        factory=Connection,
    )
    conn.file = Path(path)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    # NORMAL in WAL mode survives any process crash (SIGKILL included); only an OS crash or power
    # loss can drop the last commits, and never corrupts the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    # Group commit rolls a refused move back to its savepoint; with the statement journal in
    # memory, the pages each savepoint guards are copied in RAM instead of spilled to a temp file
    # (pwrite calls on every busy commit). Temporary tables and sorts also stay in memory.
    conn.execute("PRAGMA temp_store = MEMORY")
    # Never checkpoint inside a COMMIT: the store's checkpointer thread does (checkpoints.py).
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def initialise(conn: sqlite3.Connection, indexed_fields: Iterable[tuple[str, str]]) -> None:
    """Create the schema and the expression indexes (idempotent; safe from many processes)."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    statements = [s for s in SCHEMA.split(";") if s.strip()]
    for field_path, expression in indexed_fields:
        # Partial: only documents that have the field are in its index. Most writes (live-map
        # positions, ledgers, boards) have none of the indexed fields and so skip the index
        # updates altogether; a query's comparison on the field implies it is not null, so
        # SQLite still uses the index for every filter the store pushes down.
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {index_name(field_path)} ON documents"
            f" (collection, {expression}) WHERE {expression} IS NOT NULL"
        )
        # The index of a data directory made before (every document in it) goes.
        statements.append(f"DROP INDEX IF EXISTS {index_name(field_path, version=1)}")

    def create(c: sqlite3.Connection) -> None:
        for statement in statements:
            c.execute(statement)

    in_write_transaction(conn, create, attempts=20)


class LockBusy(Exception):
    """The write lock is held elsewhere and the caller asked not to wait for it: nothing ran."""


_waiting = threading.local()  # .off: this thread runs its write transactions without waiting


@contextmanager
def without_waiting() -> Iterator[None]:
    """Within it, until one of them commits, ``in_write_transaction`` on this thread takes the
    write lock (the process's and SQLite's) only if it is free at once, and tries once; when it
    is not, it raises ``LockBusy`` without running the body. So ``LockBusy`` always means that
    nothing of the block committed; after a commit, what the block still writes (a store's
    follow-up transaction) waits as usual rather than be abandoned half-done. Only the lock is
    never waited for: the body's own statements under it are local work (in WAL mode a writer
    waits for no reader)."""
    _waiting.off = True
    try:
        yield
    finally:
        _waiting.off = False


def at_once_only() -> bool:
    """Whether this thread is within ``without_waiting`` with nothing of the block committed yet.
    Another embedded SQLite file the block writes (the Pub/Sub broker's) honours the same switch:
    it then takes its write lock only if free at once, else raises ``LockBusy``, and calls
    ``committed_at_once`` after its commit."""
    return getattr(_waiting, "off", False)


def committed_at_once() -> None:
    """A write transaction of the block committed: what the block still writes waits as usual."""
    _waiting.off = False


def has_schema(conn: sqlite3.Connection) -> bool:
    """Whether the file has the store's tables (a reader of a store whose owner has not started
    yet finds none, and creates them once)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cursors'")
    return found.fetchone() is not None


def is_busy(error: sqlite3.Error) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def in_write_transaction(
    conn: sqlite3.Connection,
    body: Callable[[sqlite3.Connection], T],
    attempts: int = 5,
    lock: threading.Lock | None = None,
) -> T:
    """Run ``body`` between BEGIN IMMEDIATE and COMMIT, re-running it when the lock stays busy
    past ``busy_timeout``; after ``attempts`` tries raise TransactionContention.

    An exception from ``body`` rolls back and propagates unchanged (it is not contention).
    Within ``without_waiting``: one try, ``LockBusy`` if either lock is held elsewhere.
    """
    if getattr(_waiting, "off", False):
        return _at_once(conn, body, lock)
    if lock is not None:
        with lock:
            return in_write_transaction(conn, body, attempts)
    last: sqlite3.Error | None = None
    for attempt in range(1, attempts + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            last = e
        else:
            try:
                result = body(conn)
                conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as e:
                conn.execute("ROLLBACK") if conn.in_transaction else None
                if not is_busy(e):
                    raise
                last = e
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        log.warning(
            "document store transaction attempt %d of %d hit contention: %s",
            attempt,
            attempts,
            last,
        )
        if attempt < attempts:
            # Jitter so that processes that collided do not collide again in lockstep.
            time.sleep(random.uniform(0, 0.002 * attempt))
    raise TransactionContention(
        f"transaction gave up after {attempts} attempts: too much contention on the document store "
        f"(the SQLite write lock stayed busy; last error: {last})"
    )


def _at_once(
    conn: sqlite3.Connection,
    body: Callable[[sqlite3.Connection], T],
    lock: threading.Lock | None,
) -> T:
    if not isinstance(conn, Connection):
        raise TypeError("without_waiting needs a connection made by db.connect")
    if lock is not None and not lock.acquire(blocking=False):
        raise LockBusy("another thread of this process is writing to the document store")
    try:
        conn = conn.impatient()  # SQLite's busy handler would sleep on this thread
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if is_busy(e):
                raise LockBusy(
                    f"another process holds the document store's write lock ({e})"
                ) from e
            raise
        try:
            result = body(conn)
            conn.execute("COMMIT")
            _waiting.off = False
            return result
        except sqlite3.OperationalError as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_busy(e):  # not expected under the write lock in WAL mode; still, nothing ran
                raise LockBusy(f"the document store was busy inside a transaction ({e})") from e
            raise
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        if lock is not None:
            lock.release()
