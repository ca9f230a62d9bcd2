"""The broker's SQLite file: schema, per-thread connections and write transactions.

WAL mode lets many processes read while one writes; every write is one ``BEGIN IMMEDIATE``
transaction so two processes pulling the same subscription never lease the same message twice.
``synchronous=NORMAL`` in WAL mode keeps every committed transaction across a process crash
(kill -9), which is the failure the platform must survive; only an OS crash could lose the last
commits, and the broker is a laptop runtime.

A thread that must never wait for the lock (an event loop publishing a telemetry batch) writes
within the document store's ``db.without_waiting``, the one switch for every embedded SQLite file:
a write then takes the lock (the process's and SQLite's) only if it is free at once, through a
second connection of the thread whose busy timeout is 0, and otherwise raises ``db.LockBusy`` with
nothing run. The broker's own variant of ``db``'s at-once transaction, because its file is not the
document store's: its connections keep SQLite's automatic checkpoints (the document store's turn
them off for a checkpointer thread of its own), and a write here is one block under ``write``, not
a body re-run by ``db.in_write_transaction``'s retry loop.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from meridian.embedded.docstore import db as docstore_db
from meridian.embedded.sqlite import process_write_lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('next_message_id', 1), ('topology_version', 0);
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, retention_s REAL NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, topic_id INTEGER NOT NULL,
    config TEXT NOT NULL, created REAL NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0);
-- Messages are kept for the topic's retention so that seek can replay them.
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, publish_time REAL NOT NULL,
    data BLOB NOT NULL, attributes TEXT, ordering_key TEXT);
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages (topic_id, publish_time);
-- One row per (subscription, unacknowledged message): the backlog. Ack deletes the row, so the
-- table stays as small as the backlog. ``due`` is when the message may next be delivered
-- (publish time, lease expiry plus backoff, or nack time plus backoff); ``leased_until`` is set
-- while a consumer holds it.
CREATE TABLE IF NOT EXISTS backlog (
    sub_id INTEGER NOT NULL, msg_id INTEGER NOT NULL, due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, leased_until REAL, ordering_key TEXT,
    PRIMARY KEY (sub_id, msg_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS backlog_due ON backlog (sub_id, due);
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY, sub_id INTEGER NOT NULL, topic_id INTEGER NOT NULL,
    high_water INTEGER NOT NULL, created REAL NOT NULL, expire REAL NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot_members (
    snapshot TEXT NOT NULL, msg_id INTEGER NOT NULL, PRIMARY KEY (snapshot, msg_id))
    WITHOUT ROWID;
"""


class Store:
    """One database file shared by every process of the data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = process_write_lock(path)
        with self.write() as db:
            # One statement at a time: executescript would commit the write lock away, and two
            # processes creating the schema at once must not interleave.
            sql = "\n".join(line for line in SCHEMA.splitlines() if not line.startswith("--"))
            for statement in sql.split(";"):
                if statement.strip():
                    db.execute(statement)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared across threads)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    def impatient(self) -> sqlite3.Connection:
        """This thread's second connection, whose busy timeout is 0: ``BEGIN IMMEDIATE`` there
        takes the lock at once or fails at once (opened on first use; the file is already in WAL
        mode, which persists)."""
        db: sqlite3.Connection | None = getattr(self._local, "impatient", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=0")
            self._local.impatient = db
        return db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One immediate (write-locked) transaction, committed on success, rolled back on error.
        Within ``db.without_waiting``, before anything of the block committed: ``LockBusy``
        rather than wait for the lock."""
        if docstore_db.at_once_only():
            with self._write_at_once() as db:
                yield db
            return
        db = self.connection()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _write_at_once(self) -> Iterator[sqlite3.Connection]:
        if not self._write_lock.acquire(blocking=False):
            raise docstore_db.LockBusy("another thread of this process is writing to the broker")
        try:
            db = self.impatient()  # SQLite's busy handler would sleep on this thread
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if docstore_db.is_busy(e):
                    raise docstore_db.LockBusy(
                        f"another process holds the Pub/Sub broker's write lock ({e})"
                    ) from e
                raise
            try:
                yield db
                db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if docstore_db.is_busy(e):  # not expected under the write lock; nothing committed
                    raise docstore_db.LockBusy(f"the broker was busy in a transaction ({e})") from e
                raise
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            docstore_db.committed_at_once()
        finally:
            self._write_lock.release()

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap cross-process wake-up signal."""
        row = self.connection().execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        for name in ("db", "impatient"):
            db: sqlite3.Connection | None = getattr(self._local, name, None)
            if db is not None:
                db.close()
                setattr(self._local, name, None)
