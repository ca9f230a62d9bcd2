"""Group commit, thread flavour: for callers on many threads, the first caller writes what is queued.

A caller that finds no write in progress writes everything queued so far, its own item included;
callers that arrive while it writes wait, and the first of them to wake with its item still
unwritten writes the next group. So under load many items share one wait for the store's write
lock, and alone an item is written at once (nobody waits for company). Each caller returns only
once its own item is written, with its own outcome, as with a plain write.

The event-loop flavour is ``concurrency.group_commit.Committer`` (with ``batches.Batcher`` and
``ordered_writer.OrderedWriter``; see the package's docstring).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Queued(Generic[Item]):
    item: Item
    done: bool = False
    outcome: Any = field(default=None, repr=False)


class GroupWriter(Generic[Item]):
    """``write(item)`` through ``write_group(items)``, which gives each item's outcome in order
    (an exception in the place of an item that failed); a ``write_group`` that raises fails
    every item of its group with that exception."""

    def __init__(self, write_group: Callable[[list[Item]], Sequence[Any]]) -> None:
        self._write_group = write_group
        self._changed = threading.Condition()
        self._queue: list[_Queued[Item]] = []
        self._writing = False

    def write(self, item: Item) -> Any:
        """The item's outcome once its group is written; raises its exception if it failed."""
        queued = _Queued(item)
        with self._changed:
            self._queue.append(queued)
            while self._writing and not queued.done:
                self._changed.wait()
            if not queued.done:  # nobody is writing: write what is queued, this item included
                self._writing = True
                group, self._queue = self._queue, []
        if not queued.done:
            self._write(group)
        if isinstance(queued.outcome, BaseException):
            raise queued.outcome
        return queued.outcome

    def _write(self, group: list[_Queued[Item]]) -> None:
        outcomes: Sequence[Any]
        try:
            outcomes = self._write_group([q.item for q in group])
        except Exception as failed:
            outcomes = [failed] * len(group)
        if len(outcomes) != len(group):  # never leave a waiter without its outcome
            lost = RuntimeError(f"{len(outcomes)} outcomes for a group of {len(group)}")
            outcomes = [lost] * len(group)
        with self._changed:
            for q, outcome in zip(group, outcomes, strict=True):
                q.outcome = outcome
                q.done = True
            self._writing = False
            self._changed.notify_all()
