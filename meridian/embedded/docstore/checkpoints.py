"""WAL checkpoints in a background thread, never inside a commit.

In WAL mode SQLite copies the log back into the database file in a checkpoint. By default the
connection whose COMMIT takes the log past 1,000 pages runs it, inside that COMMIT: ~4 MB copied
and synced while the committer waits. The command service commits parcel moves on its event
loop (group commit), so every few hundred moves one request batch stalled for 20 to 60 ms, which
was the p99 of ``:deliver`` in an in-process run (flush p99 24 ms with automatic checkpoints,
9 ms without).

So every connection is opened with ``wal_autocheckpoint = 0`` (``db.connect``) and each process
that opens the store runs one thread per database file that checkpoints (PASSIVE: never blocks a
writer or a reader) whenever another connection has committed since its last look. SQLite
releases the GIL while it copies, so the work runs beside the event loop on another core.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger("meridian.docstore")

INTERVAL_S = 0.5  # the log grows by at most this much commit traffic between checkpoints


class Checkpointer:
    """One per database file per process, alive while any store of the file is."""

    _running: ClassVar[dict[str, Checkpointer]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, file: Path, busy_timeout_ms: int) -> None:
        self.file = file
        self.busy_timeout_ms = busy_timeout_ms
        self.stores: weakref.WeakSet[Any] = weakref.WeakSet()
        self.checkpoints = 0  # for tests
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpoint {file.name}", daemon=True
        )

    @classmethod
    def serve(cls, store: Any) -> Checkpointer:
        """Make sure the checkpointer of ``store.file`` runs while ``store`` is alive."""
        key = str(Path(store.file).resolve())
        with cls._guard:
            checkpointer = cls._running.get(key)
            if checkpointer is None:
                checkpointer = cls._running[key] = Checkpointer(store.file, store.busy_timeout_ms)
                checkpointer._thread.start()
            checkpointer.stores.add(store)
            return checkpointer

    def release(self, store: Any) -> None:
        self.stores.discard(store)

    def _retire_if_unused(self) -> bool:
        with self._guard:
            if len(self.stores):
                return False
            key = str(Path(self.file).resolve())
            if self._running.get(key) is self:
                del self._running[key]
            return True

    def _run(self) -> None:
        from .db import connect  # db imports nothing from here; this keeps it that way

        conn = connect(self.file, self.busy_timeout_ms)
        try:
            seen = conn.execute("PRAGMA data_version").fetchone()[0]
            stop = threading.Event()
            while not stop.wait(INTERVAL_S):
                if self._retire_if_unused():
                    return
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen:  # someone committed since the last look
                        seen = version
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        self.checkpoints += 1
                except sqlite3.Error as e:  # e.g. the file went away with a test's directory
                    log.debug("WAL checkpoint of %s skipped: %s", self.file, e)
        finally:
            conn.close()
