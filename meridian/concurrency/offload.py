"""Where an event loop runs an adapter's blocking calls: on its own thread, or in a worker thread.

Chosen once, by ``meridian.adapters.offload``, from the adapters in use, and passed to services
by their bootstrap; no service tests which adapter it has. On the embedded runtime a call (a
SQLite commit, an embedded publish) is local CPU work of a millisecond or less, and handing it to
a thread and back cost more than the call: 10% of the command service's CPU per telemetry batch,
4-6% of a live-map writer process (side-by-side runs at 3,800 pings/s), from the hop and two
threads contending for the GIL. On Google's services a call is network round trips, which must
never hold the event loop.

But a local call must not wait on the loop either: a SQLite write waits for its file's write lock
while another process holds it (the Pub/Sub broker's file is written by every process of the data
directory: acks, Eventarc's forwarder, the event publisher), and while the loop waits nothing else
of the process runs, ``/healthz`` included (issue #24). So where calls write, ``AtOnce`` runs each
on the loop only if the locks it takes are free at once (the embedded runtime's
``db.without_waiting``, which the broker honours too, wired by ``meridian.adapters.offload``), and
otherwise on one thread of its own, in turn, the way the command service's group commit does for
parcel moves (``concurrency.group_commit``): a call that found a lock held (``WouldWait``, nothing
of it done) is run again there, and every later call queues behind it there until the thread has
caught up, so calls take effect in the order they came. While the thread has work, a new call is
shed with ``Overloaded`` (503 with ``Retry-After``), nothing run, once the oldest waiting call has
waited ``MAX_WAIT_S`` or ``MAX_WAITING`` calls wait; an accepted call is never dropped.

Uncontended, the try costs what the inline call did (the same statements, on a second connection
of the loop's thread whose busy timeout is 0): parsing, recording and publishing a batch of 100
pings into the embedded broker took 2.35 and 2.34 CPU-ms a batch through ``Inline``, 2.27 and 2.37
through ``AtOnce``, the same within the noise (``loadtest/bench_publish_at_once.py``, medians of
two runs of 4 and 6 interleaved rounds in-process).
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import functools
import itertools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from meridian import metrics
from meridian.concurrency.group_commit import WouldWait
from meridian.domain.errors import Overloaded

T = TypeVar("T")

# Shedding, as the group commit's (``group_commit.MAX_WAIT_S``): a caller that would wait over a
# second for a lock someone else holds is better told to come back. A queue of MAX_WAITING
# telemetry batches of 100 pings is itself about a second of the thread's work (~2.3 CPU-ms each,
# see the module's docstring). Retry-After: the bound, plus the second such a queue takes to drain.
MAX_WAIT_S = 1.0
MAX_WAITING = 500
SHED_RETRY_AFTER_S = 2

# What ``AtOnce`` is given to run a call only if the locks it takes are free at once: the call's
# result, or ``WouldWait`` with nothing of it done.
TryAtOnce = Callable[..., Any]


class Offload(abc.ABC):
    @abc.abstractmethod
    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``, with the caller's context (its trace and log fields)."""


class Inline(Offload):
    """On the event loop's own thread: for local work shorter than a thread hop."""

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return function(*args)


class InThread(Offload):
    """In a worker thread of ``executor`` (the loop's default one if None): for network I/O."""

    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        context = contextvars.copy_context()
        call = functools.partial(context.run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


class AtOnce(Offload):
    """On the event loop's own thread when the locks a call takes are free at once
    (``try_at_once``), else in turn on one thread of ``executor``; shedding past its bounds, as
    described above. Its calls are counted as the command service's publishes
    (``meridian_publish_*``): the telemetry ingest is what it runs."""

    def __init__(
        self,
        try_at_once: TryAtOnce,
        executor: Executor,
        max_wait_s: float = MAX_WAIT_S,
        max_waiting: int = MAX_WAITING,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``executor`` must run one call at a time, in the order given (one thread): the order
        of calls handed to it is the order they take effect."""
        self._try = try_at_once
        self._executor = executor
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting
        self._clock = clock
        # The arrival time of each call handed to the thread and not yet done, oldest first.
        self._behind: dict[int, float] = {}
        self._tickets = itertools.count()
        metrics.watch_publish_queue(self)

    @property
    def waiting(self) -> int:
        """Calls handed to the thread and not yet done (metrics' publish queue depth)."""
        return len(self._behind)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``; ``Overloaded``, with nothing run, past the bounds."""
        if self._behind:  # calls before it wait on the thread: this one goes after them
            arrived = self._clock()
            self._shed_if_overloaded(arrived)
        else:
            try:
                result: T = self._try(function, *args)
            except WouldWait:
                arrived = self._clock()
            else:
                metrics.published_on_loop()
                return result
        return await self._in_turn(arrived, function, *args)

    def _shed_if_overloaded(self, now: float) -> None:
        waited = now - next(iter(self._behind.values()))
        if waited < self.max_wait_s and len(self._behind) < self.max_waiting:
            return
        metrics.publish_shed()
        raise Overloaded(
            f"the service is overloaded: {len(self._behind)} requests wait to publish, the "
            f"oldest for {waited:.1f} s (the Pub/Sub broker's write lock is held elsewhere, or "
            f"batches come faster than they are published); nothing was done: try again in "
            f"{SHED_RETRY_AFTER_S} s",
            SHED_RETRY_AFTER_S,
        )

    async def _in_turn(self, arrived: float, function: Callable[..., T], *args: Any) -> T:
        ticket = next(self._tickets)
        self._behind[ticket] = arrived
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, function, *args)
        future = self._executor.submit(call)
        future.add_done_callback(lambda _: self._call_soon(loop, ticket))
        # Shielded: a call whose caller went away is run all the same, in its turn (a telemetry
        # batch's events have ids derived from their pings: a client's retry is deduplicated).
        return await asyncio.shield(asyncio.wrap_future(future))

    def _call_soon(self, loop: asyncio.AbstractEventLoop, ticket: int) -> None:
        if not loop.is_closed():  # else the process is stopping: nobody counts any more
            loop.call_soon_threadsafe(self._done, ticket)

    def _done(self, ticket: int) -> None:
        metrics.published_in_turn(self._clock() - self._behind.pop(ticket))
