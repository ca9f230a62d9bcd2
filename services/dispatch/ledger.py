"""The step ledger's entries, committed together when steps finish together.

When a saga's parallel branches confirm their routes at the same moment, each step's answer
used to wait for the store's write lock twice: once for its own transaction, once more for its
ledger entry. Entries that arrive while one batch is being written are written as the next
batch, by the first of their callers (group commit), so under load many entries share one wait.
Each caller still returns only once its own entry is committed, as with a plain create.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meridian.domain.errors import AlreadyExists
from meridian.ports import DocumentStore


@dataclass
class _Entry:
    path: str
    data: Mapping[str, Any]
    done: bool = False
    error: BaseException | None = field(default=None, repr=False)


class LedgerWriter:
    """``create`` an entry if absent (AlreadyExists is not an error: a concurrent retry of the
    same step wrote the same answer first), batched with the entries of concurrent callers."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._changed = threading.Condition()
        self._queue: list[_Entry] = []
        self._writing = False

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        entry = _Entry(path, data)
        with self._changed:
            self._queue.append(entry)
            while self._writing and not entry.done:
                self._changed.wait()
            if not entry.done:  # nobody is writing: write what is queued, this entry included
                self._writing = True
                batch, self._queue = self._queue, []
        if not entry.done:
            self._write(batch)
        if entry.error is not None:
            raise entry.error

    def _write(self, batch: list[_Entry]) -> None:
        error: BaseException | None = None
        try:
            self.store.batch_write([("create", e.path, e.data) for e in batch])
        except AlreadyExists:
            # one of them was written already (a retry): the others go one by one
            for e in batch:
                try:
                    with contextlib.suppress(AlreadyExists):
                        self.store.create(e.path, e.data)
                except Exception as own:
                    e.error = own
        except Exception as failed:
            error = failed
        with self._changed:
            for e in batch:
                e.error = e.error or error
                e.done = True
            self._writing = False
            self._changed.notify_all()
