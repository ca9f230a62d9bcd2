"""Listeners across processes: tail the change log by sequence, woken by any commit.

A write in any process bumps SQLite's ``PRAGMA data_version`` as seen from every other
connection. One ``CommitHub`` per event loop polls it on a dedicated connection, quickly while
writes are flowing and backing off to ``MAX_POLL_S`` when idle, and wakes the listeners; each
listener then reads the change records after the last sequence it saw. Nothing is skipped: a
listener whose position was pruned by retention is given a fresh snapshot with ``resync=True``.

The hub also reads, once per wake-up, which documents and collections the new changes touched
(paths only, nothing decoded), so a listener whose document did not change moves on without a
read of its own: with a commit every 20 ms (the live map's writer at the peak) and three
listeners per customer stream, per-listener reads made a stream process's cost grow with its
customers times the commit rate.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from meridian.ports import Document, DocumentChange, Query, Snapshot

from . import db
from .changelog import (
    Change,
    ChangesExpired,
    changes_of_path,
    collection_changed,
    first_retained_seq,
    latest_after,
    max_seq,
    paths_changed,
)
from .query import run_query
from .values import from_micros

if TYPE_CHECKING:
    from .store import EmbeddedDocumentStore

MIN_POLL_S = 0.001
MAX_POLL_S = 0.02  # bounds the idle wake-up latency; one PRAGMA per 20 ms per process is free


@dataclass(frozen=True)
class CommitBatch:
    """What one wake-up of the hub covers: the change log's (after_seq, upto_seq] and the
    documents and collections changed in it."""

    generation: int
    after_seq: int
    upto_seq: int
    paths: frozenset[str]
    collections: frozenset[str]


class CommitHub:
    """Wakes every listener of one event loop when any process commits to the store."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self.generation = 0
        # None when the hub could not say what changed (its range was pruned): listeners read.
        self.batch: CommitBatch | None = None
        self._changed = asyncio.Event()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> None:
        self._listeners += 1
        if self._task is None or self._task.done():
            # The baseline version is read now, not when the task first runs, so a commit made
            # before then (but after the listener's snapshot) is not mistaken for the baseline;
            # and before the baseline sequence, so a commit in between is in the first batch.
            conn = self._connect()
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            seq = max_seq(conn)
            self.batch = None  # a batch of a previous task would not start at this one's seq
            self._task = asyncio.get_running_loop().create_task(self._poll(conn, version, seq))

    def unsubscribe(self) -> None:
        self._listeners -= 1
        if self._listeners <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    async def wait(self, generation: int) -> int:
        """Return once a commit newer than ``generation`` was seen; the new generation."""
        while self.generation == generation:
            await self._changed.wait()
        return self.generation

    def plan(
        self, generation: int, seq: int, path: str | None = None, collection: str | None = None
    ) -> tuple[int | None, bool]:
        """For a listener at ``seq`` woken for ``generation`` and watching ``path`` or
        ``collection``: how far it may move (None: to the latest change), and whether it must
        read the change log to get there. It need not when the batch starts where it is and
        touched nothing it watches, or ends before it; reading only up to the batch's end keeps
        it where the next batch starts."""
        batch = self.batch
        if batch is None or batch.generation != generation:
            return None, True
        if seq >= batch.upto_seq:
            return seq, False
        touched = path in batch.paths or collection in batch.collections
        return batch.upto_seq, seq != batch.after_seq or touched

    def _read_batch(self, conn: sqlite3.Connection, seq: int) -> tuple[CommitBatch | None, int]:
        with _ReadSnapshot(conn):
            latest = max_seq(conn)
            first = first_retained_seq(conn)
            if latest > seq and (first is None or first > seq + 1):
                return None, latest  # pruned past us: each listener finds out by reading
            paths, collections = paths_changed(conn, seq, latest)
        return CommitBatch(self.generation + 1, seq, latest, paths, collections), latest

    async def _poll(self, conn: sqlite3.Connection, version: int, seq: int) -> None:
        try:
            interval = MIN_POLL_S
            while True:
                await asyncio.sleep(interval)
                current = conn.execute("PRAGMA data_version").fetchone()[0]
                if current != version:
                    version = current
                    self.batch, seq = self._read_batch(conn, seq)
                    self.generation += 1
                    changed, self._changed = self._changed, asyncio.Event()
                    changed.set()
                    interval = MIN_POLL_S
                else:
                    interval = min(interval * 1.5, MAX_POLL_S)
        finally:
            conn.close()


def _document(change: Change) -> Document | None:
    if change.new_data is None:
        return None
    created = change.create_time or change.commit_time
    return Document(change.path, change.new_data, created, change.commit_time)


_KINDS: dict[str, Literal["added", "modified", "removed"]] = {
    "created": "added",
    "updated": "modified",
    "deleted": "removed",
}


def _read_now(conn: sqlite3.Connection) -> tuple[int, float]:
    seq = max_seq(conn)
    row = conn.execute("SELECT commit_time FROM changes WHERE seq = ?", (seq,)).fetchone()
    return seq, row[0] if row else 0


class _ReadSnapshot:
    """A read transaction: everything read inside sees one committed state."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, *_: object) -> None:
        self.conn.execute("COMMIT")


async def watch_document(store: EmbeddedDocumentStore, path: str) -> AsyncIterator[Snapshot]:
    from .store import read_document

    hub = store.hub()
    hub.subscribe()
    conn = db.connect(store.file, store.busy_timeout_ms)
    try:
        generation = hub.generation
        resync = False
        while True:  # one pass per (re)synchronisation
            with _ReadSnapshot(conn):
                seq, micros = _read_now(conn)
                document = read_document(conn, path)
            docs = (document,) if document else ()
            changes = tuple(DocumentChange("added", d, d.path) for d in docs)
            yield Snapshot(docs, changes, from_micros(int(micros)), resync=resync)
            try:
                while True:
                    generation = await hub.wait(generation)
                    upto, read = hub.plan(generation, seq, path=path)
                    if not read and upto is not None:
                        seq = upto
                        continue
                    with _ReadSnapshot(conn):
                        latest = latest_after(conn, seq, f"listener:{path}")
                        if upto is not None:
                            latest = min(latest, upto)
                        mine = changes_of_path(conn, seq, latest, path)
                    seq = latest
                    for change in mine:
                        document = _document(change)
                        kind = _KINDS[change.kind]
                        yield Snapshot(
                            (document,) if document else (),
                            (DocumentChange(kind, document, path),),
                            change.commit_time,
                        )
            except ChangesExpired:
                resync = True
    finally:
        hub.unsubscribe()
        conn.close()


def _diff(before: dict[str, Document], after: list[Document]) -> tuple[DocumentChange, ...]:
    changes: list[DocumentChange] = []
    now = {d.path: d for d in after}
    for path, old in before.items():
        if path not in now:
            changes.append(DocumentChange("removed", old, path))
    for document in after:
        old_doc = before.get(document.path)
        if old_doc is None:
            changes.append(DocumentChange("added", document, document.path))
        elif old_doc.update_time != document.update_time:
            changes.append(DocumentChange("modified", document, document.path))
    return tuple(changes)


async def watch_query(store: EmbeddedDocumentStore, query: Query) -> AsyncIterator[Snapshot]:
    run_query(store._conn(), query)  # validate before the first await, like watch_document
    hub = store.hub()
    hub.subscribe()
    conn = db.connect(store.file, store.busy_timeout_ms)
    try:
        generation = hub.generation
        resync = False
        while True:
            with _ReadSnapshot(conn):
                seq, micros = _read_now(conn)
                documents = run_query(conn, query)
            current = {d.path: d for d in documents}
            yield Snapshot(tuple(documents), _diff({}, documents), from_micros(int(micros)), resync)
            try:
                while True:
                    generation = await hub.wait(generation)
                    upto, read = hub.plan(generation, seq, collection=query.collection)
                    if not read and upto is not None:
                        seq = upto
                        continue
                    # Changes and the re-run query are read in one transaction (to the latest
                    # change, past the batch), so the snapshot is exactly the state after the
                    # last change read.
                    with _ReadSnapshot(conn):
                        latest = latest_after(conn, seq, f"listener:{query.collection}")
                        last = collection_changed(conn, seq, latest, query.collection)
                        documents = run_query(conn, query) if last is not None else []
                    seq = latest
                    if last is None:
                        continue
                    changes = _diff(current, documents)
                    current = {d.path: d for d in documents}
                    if changes:
                        yield Snapshot(tuple(documents), changes, last.commit_time)
            except ChangesExpired:
                resync = True
    finally:
        hub.unsubscribe()
        conn.close()
