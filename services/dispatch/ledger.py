"""The step ledger's entries, committed together when steps finish together.

When a saga's parallel branches confirm their routes at the same moment, each step's answer
used to wait for the store's write lock twice: once for its own transaction, once more for its
ledger entry. Entries that arrive while one batch is being written are written as the next
batch, by the first of their callers (``meridian.concurrency.group_writer``, the thread flavour
of group commit), so under load many entries share one wait. Each caller still returns only once
its own entry is committed, as with a plain create.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from meridian.concurrency.group_writer import GroupWriter
from meridian.domain.errors import AlreadyExists
from meridian.ports import DocumentStore

Entry = tuple[str, Mapping[str, Any]]


class LedgerWriter:
    """``create`` an entry if absent (AlreadyExists is not an error: a concurrent retry of the
    same step wrote the same answer first), batched with the entries of concurrent callers."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._writer: GroupWriter[Entry] = GroupWriter(self._write)

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        self._writer.write((path, data))

    def _write(self, entries: list[Entry]) -> list[BaseException | None]:
        """One batch write; an error other than AlreadyExists fails every entry of the batch."""
        try:
            self.store.batch_write([("create", path, data) for path, data in entries])
        except AlreadyExists:
            # one of them was written already (a retry): the others go one by one
            outcomes: list[BaseException | None] = []
            for path, data in entries:
                try:
                    with contextlib.suppress(AlreadyExists):
                        self.store.create(path, data)
                except Exception as own:
                    outcomes.append(own)
                else:
                    outcomes.append(None)
            return outcomes
        return [None] * len(entries)
