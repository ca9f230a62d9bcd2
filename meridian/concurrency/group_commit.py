"""Group commit: transactions that become ready together commit together.

``meridian.concurrency`` is the one home of the mechanism (its docstring lists every flavour);
this module is its part for transactions. ``Transactions`` is how a service's store commits a
group (chosen once, in ``meridian.adapters.transactions``); ``Committer`` runs it for requests on
one event loop (the command service's parcel moves); ``commit_per_event`` turns a reactor's
per-event transaction into a batch handler for ``concurrency.batches.Batcher``.

On the embedded store a move is a sub-millisecond SQLite transaction of which the fixed part
(taking the write lock, BEGIN IMMEDIATE, COMMIT and its log writes) is a good share: in-process,
a move alone cost ~1.0 CPU-ms, one of four ~0.75. Moves that become ready together are committed
in one SQLite transaction (a refused move is rolled back alone and gets its own error), and every
request is answered only after that commit, so a 202 still means durably accepted.

At a steady 900 moves a second few arrive in the same event-loop turn (two groups in three held
one move), so most moves paid the fixed part alone and the process ran at ~95% of its core,
where any pause (a collection, CPU taken by the hypervisor) queued requests for hundreds of
milliseconds. So when moves arrive fast enough that ``COMPANY - 1`` more are expected within
``MAX_LINGER_S`` (from 833 a second), the first move of a group waits for them, and the group
commits as soon as they are there: ~5 ms of latency that bought a tenth of the CPU per move over
HTTP at 900 a second (0.89-0.98 against 1.01-1.05 CPU-ms, interleaved runs). Slower, nobody
waits.

On Firestore, where a transaction is network round trips, each move runs in a worker thread
instead, never on the event loop, and a group's transactions commit one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from meridian.ports import DocumentStore, Transaction

T = TypeVar("T")
Item = TypeVar("Item")

TransactionFunction = Callable[[Transaction], Any]
# Outcomes in the order of the functions; an exception in the place of one that raised.
CommitGroup = Callable[[Sequence[TransactionFunction]], list[Any]]

MAX_GROUP = 64  # bounds how long the first request of a burst waits for the others' work
COMPANY = 6  # the group size worth waiting for: past it a move costs little less
MAX_LINGER_S = 0.006  # the longest the first move of a group waits for company
RATE_WINDOW_S = 0.25  # the arrival rate is counted over windows this long


@dataclass(frozen=True)
class Transactions:
    """How a service commits its transaction functions, chosen once by the adapter wiring.

    ``commit_group`` commits several independent transaction functions, each atomic on its own:
    one that raises gets its exception in its place and does not affect the others (the embedded
    store's ``run_transactions``: one SQLite commit; by default, one by one). ``inline`` says
    that a group is local sub-millisecond work an event loop may run itself; otherwise it is
    network round trips, for a worker thread."""

    store: DocumentStore
    inline: bool = False
    commit_group: CommitGroup | None = None

    def run_group(self, functions: Sequence[TransactionFunction]) -> list[Any]:
        if self.commit_group is not None:
            return self.commit_group(functions)
        outcomes: list[Any] = []
        for function in functions:
            try:
                outcomes.append(self.store.run_transaction(function))
            except Exception as e:
                outcomes.append(e)
        return outcomes


class Committer:
    """Runs transaction functions for requests on one event loop, grouped as described above."""

    def __init__(
        self,
        transactions: Transactions,
        max_group: int = MAX_GROUP,
        company: int = COMPANY,
        max_linger_s: float = MAX_LINGER_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.store = transactions.store
        self.max_group = max_group
        self.company = company
        self.max_linger_s = max_linger_s
        self.groups = 0  # commits made, for tests and /healthz-style introspection
        self._inline = transactions.inline
        self._run_group = transactions.commit_group or transactions.run_group
        self._clock = clock
        self._rate = 0.0  # moves a second, over the last whole window
        self._window_start = clock()
        self._window_count = 0
        self._pending: list[tuple[TransactionFunction, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    def linger(self) -> float:
        """How long the first move of a new group waits for company: the time ``company - 1``
        more take to arrive at the recent rate, if within ``max_linger_s``; else not at all."""
        if self._rate <= 0:
            return 0.0
        wait = (self.company - 1) / self._rate
        return wait if wait <= self.max_linger_s else 0.0

    def _arrived(self) -> None:
        # Counted over a window, not smoothed per gap: requests come in bursts (all that a
        # pause held back at once), and the rate, not each gap, says whether company will come.
        self._window_count += 1
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed >= RATE_WINDOW_S:
            self._rate = self._window_count / elapsed
            self._window_start, self._window_count = now, 0

    async def run(self, function: Callable[[Transaction], T]) -> T:
        """Run ``function`` as a transaction; its result once committed (or its exception)."""
        if not self._inline:
            return await anyio.to_thread.run_sync(self.store.run_transaction, function)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._arrived()
        self._pending.append((function, future))
        if not self._scheduled:
            self._scheduled = True
            wait = self.linger()
            if wait > 0:
                self._timer = loop.call_later(wait, self._flush)
            else:
                loop.call_soon(self._flush)
        elif self._timer is not None and len(self._pending) >= self.company:
            self._timer.cancel()  # the company came: no need to wait out the rest
            self._timer = None
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        self._timer = None
        while self._pending:
            group = self._pending[: self.max_group]
            self._pending = self._pending[self.max_group :]
            outcomes: list[Any]
            try:
                outcomes = self._run_group([function for function, _ in group])
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


def commit_per_event(
    transactions: Transactions, prepare: Callable[[Item], TransactionFunction | str]
) -> Callable[[Sequence[Item]], list[Any]]:
    """A batch handler (``Batcher``) for reactors whose effect is one transaction per event:
    ``prepare`` (reads and lookups outside the transaction) gives the event's transaction
    function, or its outcome if there is nothing to write, and the batch's transactions commit
    as one group (``Transactions.run_group``: one SQLite commit embedded, each in a savepoint of
    its own, so one that raises fails alone; one by one on Firestore). Fewer commits is less
    waiting for the store's one write lock, which every service's writes share."""

    def handle_batch(events: Sequence[Item]) -> list[Any]:
        outcomes: list[Any] = []
        functions: dict[int, TransactionFunction] = {}
        for i, event in enumerate(events):
            prepared: Any
            try:
                prepared = prepare(event)
            except Exception as e:
                prepared = e
            outcomes.append(prepared)
            if callable(prepared):
                functions[i] = prepared
        committed = transactions.run_group(list(functions.values())) if functions else []
        for i, outcome in zip(functions, committed, strict=True):
            outcomes[i] = outcome
        return outcomes

    return handle_batch
