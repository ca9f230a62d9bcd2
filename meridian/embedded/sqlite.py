"""What every embedded SQLite store shares.

SQLite lets one writer at a time hold a database; a connection that finds it locked waits in
SQLite's busy handler, which sleeps in growing steps (1, 2, 5, 10 … 100 ms). Between processes
that is the price of sharing a file, but between threads of one process it turns a queue of
sub-millisecond transactions into tail latencies of hundreds of milliseconds. So threads of one
process first queue on a process-wide lock per database file, and only processes meet SQLite's
busy handler.
"""

from __future__ import annotations

import threading
from pathlib import Path

_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def process_write_lock(database: Path | str) -> threading.Lock:
    """The lock the threads of this process take before writing to ``database``."""
    key = str(Path(database).resolve())
    with _GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.Lock()
        return lock
