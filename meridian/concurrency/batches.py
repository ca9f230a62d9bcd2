"""Items that arrive while a batch is being handled are handled together, as the next batch.

``Batcher`` is what lets a reactor pay its fixed cost per event (a transaction, a route board read
and rewritten) once per batch under load: the pushes that arrive while the previous batch is being
handled form the next one, handled in a worker thread, and each push is still answered only when
its own event's effect has committed, with its own outcome. The event publisher batches its
Firestore-trigger events with it too. With ``concurrency.group_commit.commit_per_event`` as its
batch handler, a batch's transactions commit as one group.

``trace_of`` gives a batch handler the trace of the push that brought each event (a batch runs in
no one push's trace). This module imports no web framework: handlers may use it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio.to_thread

from meridian.observability import current_traceparent, get_logger

log = get_logger(__name__)

Item = TypeVar("Item")

# While a batch is handled: each event's push trace, by id() of the event (see ``trace_of``).
BATCH_TRACES: contextvars.ContextVar[dict[int, str | None] | None] = contextvars.ContextVar(
    "batch_traces", default=None
)


def trace_of(event: object) -> str | None:
    """The ``traceparent`` of the push that brought ``event`` into the batch being handled (None
    outside a batch, or when that push carried none). A batch runs in no one push's trace, so a
    handler that publishes on behalf of one of its events passes this to the codec explicitly."""
    traces = BATCH_TRACES.get()
    return None if traces is None else traces.get(id(event))


class Batcher(Generic[Item]):
    """Hands the events of concurrent pushes (or any items) to a batch handler, at most
    ``concurrency`` batches at a time (one by default).

    An event that arrives while fewer batches run starts one at once (no waiting for company);
    those that arrive while they all run form the next one. So batches grow only under load,
    which is when sharing the per-batch cost matters. A handler whose batches mostly wait on
    external calls (an SMS gateway, a billing API) may run a few at once, so one slow batch does
    not hold back the next. If the batch handler raises as a whole, each event of the batch is
    handled alone by ``handle``, so one poison event fails (and is retried, then dead-lettered)
    alone.
    """

    def __init__(
        self,
        handle_batch: Callable[[Sequence[Item]], Sequence[Any]],
        handle: Callable[[Item], Any],
        max_batch: int = 64,
        concurrency: int = 1,
    ) -> None:
        self._handle_batch = handle_batch
        self._handle = handle
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._traces: dict[int, str | None] = {}  # id() of a pending event → its push's trace
        self._drains: set[asyncio.Task[None]] = set()
        self._running = 0  # drain loops that have not finished (counted before their task ends)
        self.batches = 0  # batches handled, for tests

    async def submit(self, event: Item) -> Any:
        """The outcome of ``event`` once its batch is handled (or its exception)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._traces[id(event)] = current_traceparent()
        if self._running < self._concurrency:
            self._running += 1
            # In a context of its own: the batch's work belongs to no one push's trace and log
            # context (a copy of the first push's would file every later batch under it).
            drain = asyncio.create_task(self._drain(), context=contextvars.Context())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                events = [event for event, _ in batch]
                traces = {id(e): self._traces.pop(id(e), None) for e in events}
                outcomes = await anyio.to_thread.run_sync(self._run, events, traces)
                self.batches += 1
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue  # the push request went away; the effect stands all the same
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._running -= 1  # with the loop's last look at _pending: nothing is stranded

    def _run(self, events: list[Item], traces: dict[int, str | None]) -> list[Any]:
        token = BATCH_TRACES.set(traces)
        try:
            return self._run_batch(events)
        finally:
            BATCH_TRACES.reset(token)

    def _run_batch(self, events: list[Item]) -> list[Any]:
        try:
            outcomes = list(self._handle_batch(events))
        except Exception as e:
            if len(events) == 1:
                return [e]
            log.warning("batch failed; handling its events one by one", error=repr(e))
            outcomes = []
            for event in events:
                try:
                    outcomes.append(self._handle(event))
                except Exception as alone:
                    outcomes.append(alone)
        return outcomes
