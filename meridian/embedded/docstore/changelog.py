"""The change log: one record per committed document write, in the same SQLite transaction.

This is what the Eventarc emulation tails, so "an event is published if and only if the write
committed". Usage::

    log = store.changes                       # a ChangeLog on the store's file
    for change in log.read_changes("eventarc", limit=100):
        publish(change)                       # at-least-once: a crash here re-reads the batch
        log.advance("eventarc", change.seq)

A tailer that must not write the store it reads (Eventarc reading the command service's store)
keeps its cursors in a database of its own: ``Cursors``.

Sequences increase strictly and are never reused. Records older than the retention are pruned;
a cursor that falls behind what is retained gets ``ChangesExpired`` rather than a silent gap.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from meridian.documents.values import to_micros
from meridian.domain.errors import MeridianError

from .values import decode, from_micros

ChangeKind = Literal["created", "updated", "deleted"]


class ChangesExpired(MeridianError):
    """A reader asked for changes that retention already pruned; ``first_seq`` is the oldest kept."""

    def __init__(self, cursor: str, after_seq: int, first_seq: int) -> None:
        self.cursor, self.after_seq, self.first_seq = cursor, after_seq, first_seq
        super().__init__(
            f"change-log cursor {cursor!r} is at {after_seq} but changes before {first_seq} were "
            "pruned by retention; resynchronise from a snapshot and advance past them"
        )


@dataclass(frozen=True)
class Change:
    """One committed write. ``old_data`` is None for created, ``new_data`` None for deleted;
    ``update_mask`` lists the changed field paths of an update (Eventarc's ``updateMask``)."""

    seq: int
    path: str
    collection: str
    kind: ChangeKind
    old_data: dict[str, Any] | None
    new_data: dict[str, Any] | None
    update_mask: tuple[str, ...]
    create_time: datetime | None
    commit_time: datetime


def change(
    path: str,
    collection: str,
    old_json: str | None,
    new_json: str | None,
    update_mask: list[str],
    create_time: int | None,
    commit_time: int,
) -> tuple[Any, ...]:
    """The change record of one write, as ``record`` stores it."""
    kind = "created" if old_json is None else "deleted" if new_json is None else "updated"
    mask = _mask_json(tuple(update_mask)) if kind == "updated" else None
    return (path, collection, kind, old_json, new_json, mask, create_time, commit_time)


def record(conn: sqlite3.Connection, changes: list[tuple[Any, ...]]) -> None:
    """Append changes (from ``change``), in order, inside the caller's open write transaction."""
    conn.executemany(
        "INSERT INTO changes (path, collection, kind, old_data, new_data, update_mask, create_time,"
        " commit_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        changes,
    )


@lru_cache(maxsize=4_096)
def _mask_json(update_mask: tuple[str, ...]) -> str:
    # A document is mostly rewritten with the same fields changing (a position, a status), so
    # the masks repeat; ``json.dumps`` of a list builds a new encoder each call.
    return json.dumps(list(update_mask))


def last_commit_time(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT commit_time FROM changes ORDER BY seq DESC LIMIT 1").fetchone()
    return row[0] if row else 0


SELECT = (
    "SELECT seq, path, collection, kind, old_data, new_data, update_mask, create_time, commit_time"
    " FROM changes"
)


def row_to_change(row: tuple[Any, ...]) -> Change:
    seq, path, collection, kind, old, new, mask, created, committed = row
    return Change(
        seq=seq,
        path=path,
        collection=collection,
        kind=kind,
        old_data=decode(old),
        new_data=decode(new),
        update_mask=tuple(json.loads(mask)) if mask else (),
        create_time=from_micros(created) if created is not None else None,
        commit_time=from_micros(committed),
    )


def first_retained_seq(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT min(seq) FROM changes").fetchone()
    return row[0]


def max_seq(conn: sqlite3.Connection) -> int:
    # sqlite_sequence survives pruning, so this is right even when the table is empty.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return row[0] if row else 0


def read_after(conn: sqlite3.Connection, after_seq: int, limit: int, cursor: str) -> list[Change]:
    """Changes with seq > after_seq, oldest first; ChangesExpired if some were pruned."""
    rows = conn.execute(
        f"{SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
    ).fetchall()
    if (not rows or rows[0][0] != after_seq + 1) and after_seq < (latest := max_seq(conn)):
        # Sequences are never skipped, so a hole below the latest one was made by pruning.
        raise ChangesExpired(cursor, after_seq, rows[0][0] if rows else latest + 1)
    return [row_to_change(r) for r in rows]


def latest_after(conn: sqlite3.Connection, after_seq: int, cursor: str) -> int:
    """The latest sequence, checking that nothing after ``after_seq`` was pruned (else
    ChangesExpired): what a listener needs before reading only the changes it cares about."""
    latest = max_seq(conn)
    if latest > after_seq:
        first = first_retained_seq(conn)
        if first is None or first > after_seq + 1:
            raise ChangesExpired(cursor, after_seq, first if first is not None else latest + 1)
    return latest


def changes_of_path(
    conn: sqlite3.Connection, after_seq: int, upto_seq: int, path: str
) -> list[Change]:
    """The changes of one document in (after_seq, upto_seq], oldest first.

    Filtered in SQL, so a listener woken by a burst of other documents' commits decodes none of
    them (before this, every listener decoded every change, the live map's main cost)."""
    rows = conn.execute(
        f"{SELECT} WHERE seq > ? AND seq <= ? AND path = ? ORDER BY seq",
        (after_seq, upto_seq, path),
    ).fetchall()
    return [row_to_change(r) for r in rows]


def paths_changed(
    conn: sqlite3.Connection, after_seq: int, upto_seq: int
) -> tuple[frozenset[str], frozenset[str]]:
    """The documents and the collections changed in (after_seq, upto_seq], nothing decoded."""
    rows = conn.execute(
        "SELECT DISTINCT path, collection FROM changes WHERE seq > ? AND seq <= ?",
        (after_seq, upto_seq),
    ).fetchall()
    return frozenset(r[0] for r in rows), frozenset(r[1] for r in rows)


def collection_changed(
    conn: sqlite3.Connection, after_seq: int, upto_seq: int, collection: str
) -> Change | None:
    """The last change to ``collection`` in (after_seq, upto_seq], if any."""
    row = conn.execute(
        f"{SELECT} WHERE seq > ? AND seq <= ? AND collection = ? ORDER BY seq DESC LIMIT 1",
        (after_seq, upto_seq, collection),
    ).fetchone()
    return row_to_change(row) if row else None


class ChangeLog:
    """Durable named cursors over the change log of one store file."""

    def __init__(self, connection: Any, retention: timedelta) -> None:
        # ``connection`` is a zero-argument callable giving this thread's sqlite3 connection.
        self._conn = connection
        self.retention = retention

    def read_changes(self, cursor_name: str, limit: int = 100) -> list[Change]:
        """Up to ``limit`` changes after the cursor's position (a new cursor starts at the
        oldest retained change). Reading does not move the cursor; ``advance`` does."""
        conn: sqlite3.Connection = self._conn()
        row = conn.execute("SELECT seq FROM cursors WHERE name = ?", (cursor_name,)).fetchone()
        if row is None:
            first = first_retained_seq(conn)
            after = (first - 1) if first is not None else max_seq(conn)
        else:
            after = row[0]
        # One read transaction, so the gap check and the rows see the same state.
        conn.execute("BEGIN")
        try:
            return read_after(conn, after, limit, cursor_name)
        finally:
            conn.execute("COMMIT")

    def position(self, cursor_name: str) -> int | None:
        row = (
            self._conn()
            .execute("SELECT seq FROM cursors WHERE name = ?", (cursor_name,))
            .fetchone()
        )
        return None if row is None else int(row[0])

    def advance(self, cursor_name: str, seq: int) -> None:
        """Record that everything up to ``seq`` is consumed. Never moves a cursor backwards."""
        conn: sqlite3.Connection = self._conn()
        conn.execute(
            "INSERT INTO cursors (name, seq, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO "
            "UPDATE SET seq = max(seq, excluded.seq), updated_at = excluded.updated_at",
            (cursor_name, seq, to_micros(datetime.now().astimezone())),
        )

    def latest_seq(self) -> int:
        return max_seq(self._conn())

    def prune(self, now: datetime | None = None) -> int:
        """Delete change records older than the retention; returns how many."""
        horizon = to_micros((now or datetime.now().astimezone()) - self.retention)
        conn: sqlite3.Connection = self._conn()
        # A plain read first: the write lock is taken only when something is old enough to go
        # (the platform prunes every store each second, beside its owner's writes).
        oldest = conn.execute("SELECT commit_time FROM changes ORDER BY seq LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= horizon:
            return 0
        # Commit times grow with seq, so the first record inside the retention bounds the prune;
        # the scan in seq order stops there, and no index on commit_time is paid for on writes.
        return conn.execute(
            "DELETE FROM changes WHERE seq < coalesce((SELECT seq FROM changes WHERE commit_time >= ?"
            " ORDER BY seq LIMIT 1), (SELECT max(seq) + 1 FROM changes))",
            (horizon,),
        ).rowcount


class Cursors:
    """Durable named positions in another store's change log, in a small database of their own
    (``file``): advancing one takes this file's write lock, never the tailed store's."""

    def __init__(self, file: Path, busy_timeout_ms: int = 5000) -> None:
        from . import db  # db imports nothing from here; this keeps it that way

        file.parent.mkdir(parents=True, exist_ok=True)
        self.file = file
        self._local = threading.local()
        self._connect = lambda: db.connect(file, busy_timeout_ms)
        conn = self._conn()
        db.initialise(conn, [])

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def position(self, cursor_name: str) -> int | None:
        row = (
            self._conn()
            .execute("SELECT seq FROM cursors WHERE name = ?", (cursor_name,))
            .fetchone()
        )
        return None if row is None else int(row[0])

    def advance(self, cursor_name: str, seq: int) -> None:
        """Record that everything up to ``seq`` is consumed. Never moves a cursor backwards."""
        self._conn().execute(
            "INSERT INTO cursors (name, seq, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO "
            "UPDATE SET seq = max(seq, excluded.seq), updated_at = excluded.updated_at",
            (cursor_name, seq, to_micros(datetime.now().astimezone())),
        )
