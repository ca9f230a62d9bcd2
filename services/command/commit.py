"""Group commit: the parcel moves that arrive together commit together.

On the embedded store a move is a sub-millisecond SQLite transaction of which the fixed part
(taking the write lock, BEGIN IMMEDIATE, COMMIT) is a good share. Moves that become ready in the
same event-loop turn are committed in one SQLite transaction, each in a savepoint of its own (a
refused move rolls back alone and gets its own error), and every request is answered only after
that commit, so a 202 still means durably accepted. On Firestore, where a transaction is network
round trips, each move runs in a worker thread instead, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from meridian.ports import DocumentStore, Transaction

T = TypeVar("T")

MAX_GROUP = 64  # bounds how long the first request of a burst waits for the others' work


class Committer:
    def __init__(self, store: DocumentStore, max_group: int = MAX_GROUP) -> None:
        self.store = store
        self.max_group = max_group
        self.groups = 0  # commits made, for tests and /healthz-style introspection
        self._pending: list[tuple[Callable[[Transaction], Any], asyncio.Future[Any]]] = []
        self._scheduled = False

    async def run(self, function: Callable[[Transaction], T]) -> T:
        """Run ``function`` as a transaction; its result once committed (or its exception)."""
        if not self.store.local_transactions:
            return await run_in_threadpool(self.store.run_transaction, function)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((function, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending:
            group = self._pending[: self.max_group]
            self._pending = self._pending[self.max_group :]
            outcomes: list[Any]
            try:
                outcomes = self.store.run_transactions([function for function, _ in group])
            except Exception as e:  # the group as a whole failed (e.g. contention after retries)
                outcomes = [e] * len(group)
            self.groups += 1
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.cancelled():
                    continue  # the client went away; its move is committed all the same
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
