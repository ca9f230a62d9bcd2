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

The loop never waits for the store's write lock, though: while it waited, nothing else of the
process would run (``/healthz`` included), and other writers hold that lock now and then (another
process on the same database, a TTL sweep, a CLI). So on the loop a group is only tried at once
(``Transactions.commit_group_at_once``: the embedded store's ``db.without_waiting``, through a
second connection whose busy timeout is 0, so a try costs no statement more: uncontended, the CPU
per move was the same within the noise, 0.076 against 0.077 CPU-ms in groups of six and 0.180
against 0.174 one by one, ``loadtest/bench_commit_at_once.py``, ten interleaved rounds in-process);
when the lock is held elsewhere (``WouldWait``) the group goes to one writer thread of the
committer's own, which waits its turn with the store's normal timeout and retries, and every later
group queues behind it there until it has caught up, so groups commit in the order they formed.
And rather than let requests queue for seconds behind a lock that stays held, the committer sheds:
while its writer has work, a new request is refused with ``Overloaded`` (503 with ``Retry-After``)
once the oldest waiting request has waited ``MAX_WAIT_S`` or ``MAX_WAITING`` requests wait. A
request it accepted is never dropped: it is answered once its group has committed (or failed).

On Firestore, where a transaction is network round trips, each move runs in a worker thread
instead, never on the event loop, and a group's transactions commit one by one; there is no write
lock to queue behind, and Cloud Run's per-instance concurrency bounds what waits, so nothing is
shed here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from meridian import metrics
from meridian.domain.errors import Overloaded, Unavailable
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
# Shedding. A driver's "mark delivered" answers in milliseconds; one that would wait over a second
# for a lock someone else holds is better told to come back. A queue of MAX_WAITING moves is
# itself about a second of commit work (~0.75 CPU-ms a move in groups), so past either bound a
# new request would wait more than a second. Retry-After: the bound, plus the second a queue at
# its bound takes to drain once the lock is free.
MAX_WAIT_S = 1.0
MAX_WAITING = 1000
SHED_RETRY_AFTER_S = 2


class WouldWait(Exception):
    """Raised by ``Transactions.commit_group_at_once`` when the store's write lock is held
    elsewhere: nothing was committed, and the group is for a thread that may wait its turn."""


@dataclass(frozen=True)
class Transactions:
    """How a service commits its transaction functions, chosen once by the adapter wiring.

    ``commit_group`` commits several independent transaction functions, each atomic on its own:
    one that raises gets its exception in its place and does not affect the others (the embedded
    store's ``run_transactions``: one SQLite commit; by default, one by one). ``inline`` says
    that a group is local sub-millisecond work an event loop may run itself; otherwise it is
    network round trips, for a worker thread. ``commit_group_at_once`` is ``commit_group`` for
    the loop: it raises ``WouldWait`` instead of waiting for the store's lock (without it, the
    loop runs ``commit_group``: a store that never waits, such as the tests' fakes)."""

    store: DocumentStore
    inline: bool = False
    commit_group: CommitGroup | None = None
    commit_group_at_once: CommitGroup | None = None

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
    """Runs transaction functions for requests on one event loop, grouped, never waiting for the
    store's lock on the loop, and shedding past its bounds, as described above."""

    def __init__(
        self,
        transactions: Transactions,
        max_group: int = MAX_GROUP,
        company: int = COMPANY,
        max_linger_s: float = MAX_LINGER_S,
        clock: Callable[[], float] = time.perf_counter,
        max_wait_s: float = MAX_WAIT_S,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.store = transactions.store
        self.max_group = max_group
        self.company = company
        self.max_linger_s = max_linger_s
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting
        self.groups = 0  # commits made, for tests and /healthz-style introspection
        self.waiting = 0  # requests accepted and not yet answered (metrics' commit queue depth)
        self._inline = transactions.inline
        self._run_group = transactions.commit_group or transactions.run_group
        self._run_group_at_once = transactions.commit_group_at_once or self._run_group
        self._clock = clock
        self._rate = 0.0  # moves a second, over the last whole window
        self._window_start = clock()
        self._window_count = 0
        self._pending: list[tuple[TransactionFunction, asyncio.Future[Any], float]] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        # The writer thread, started the first time the lock is found held; the arrival time of
        # the first request of each group handed to it, in the order it commits them.
        self._writer: ThreadPoolExecutor | None = None
        self._behind: deque[float] = deque()
        metrics.watch_commit_queue(self)

    def linger(self) -> float:
        """How long the first move of a new group waits for company: the time ``company - 1``
        more take to arrive at the recent rate, if within ``max_linger_s``; else not at all."""
        if self._rate <= 0:
            return 0.0
        wait = (self.company - 1) / self._rate
        return wait if wait <= self.max_linger_s else 0.0

    def _arrived(self) -> float:
        # Counted over a window, not smoothed per gap: requests come in bursts (all that a
        # pause held back at once), and the rate, not each gap, says whether company will come.
        self._window_count += 1
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed >= RATE_WINDOW_S:
            self._rate = self._window_count / elapsed
            self._window_start, self._window_count = now, 0
        return now

    async def run(self, function: Callable[[Transaction], T]) -> T:
        """Run ``function`` as a transaction; its result once committed (or its exception).
        ``Overloaded``, with nothing run, when the commit queue is past its bounds."""
        if not self._inline:
            return await anyio.to_thread.run_sync(self.store.run_transaction, function)
        now = self._arrived()
        if self._behind:  # only a writer thread that has work lets a queue build up
            self._shed_if_overloaded(now)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((function, future, now))
        self.waiting += 1
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

    def _shed_if_overloaded(self, now: float) -> None:
        waited = now - self._behind[0]
        if waited < self.max_wait_s and self.waiting < self.max_waiting:
            return
        metrics.commit_shed()
        raise Overloaded(
            f"the service is overloaded: {self.waiting} requests wait for the document store, "
            f"the oldest for {waited:.1f} s (its write lock is held elsewhere, or writes come "
            f"faster than it commits them); nothing was done: try again in "
            f"{SHED_RETRY_AFTER_S} s with the same idempotency key",
            SHED_RETRY_AFTER_S,
        )

    def _flush(self) -> None:
        self._scheduled = False
        self._timer = None
        while self._pending:
            group = self._pending[: self.max_group]
            self._pending = self._pending[self.max_group :]
            if self._behind:  # the writer has groups that formed earlier: this one goes after
                self._hand_to_writer(group)
                continue
            outcomes: list[Any]
            try:
                outcomes = self._run_group_at_once([function for function, _, _ in group])
            except WouldWait:
                self._hand_to_writer(group)
                continue
            except Exception as e:  # the group as a whole failed (e.g. contention after retries)
                outcomes = [e] * len(group)
            self._answer(group, outcomes, on_loop=True)

    def _hand_to_writer(
        self, group: list[tuple[TransactionFunction, asyncio.Future[Any], float]]
    ) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="group-commit")
        self._behind.append(group[0][2])
        # With the context of the request whose arrival scheduled this flush (its trace, its
        # log fields), as a loop callback would have it.
        call = functools.partial(
            contextvars.copy_context().run,
            self._run_group,
            [function for function, _, _ in group],
        )
        written = asyncio.get_running_loop().run_in_executor(self._writer, call)
        written.add_done_callback(functools.partial(self._written, group))

    def _written(
        self,
        group: list[tuple[TransactionFunction, asyncio.Future[Any], float]],
        written: asyncio.Future[list[Any]],
    ) -> None:
        self._behind.popleft()  # one writer thread: groups finish in the order they were handed
        error: BaseException | None = (
            Unavailable("the commit was cancelled: the service is stopping")
            if written.cancelled()
            else written.exception()
        )
        outcomes = [error] * len(group) if error is not None else written.result()
        self._answer(group, outcomes, on_loop=False)

    def _answer(
        self,
        group: list[tuple[TransactionFunction, asyncio.Future[Any], float]],
        outcomes: list[Any],
        on_loop: bool,
    ) -> None:
        self.groups += 1
        self.waiting -= len(group)
        metrics.group_committed(on_loop, self._clock() - group[0][2])
        for (_, future, _), outcome in zip(group, outcomes, strict=True):
            if future.cancelled():
                continue  # the client went away; its move is committed all the same
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def close(self) -> None:
        """Stop the writer thread once it has committed what it was handed."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None


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
