"""The webhook sender loop, run beside the push endpoint in the reactor's process: it wakes when
an event was enqueued or every ``poll_s`` (for scheduled retries) and sends what is due, a few at
a time. On Cloud Run the service needs CPU always allocated (terraform) for this loop to run."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from meridian.observability import get_logger
from meridian.ports import Transaction
from meridian.reactor import Batcher
from meridian.wakeup import Wakeup
from services.reactors.webhook.handlers import Deps, claim_due, claim_paths, send_only

log = get_logger(__name__)
MAX_FRESH = 10_000  # paths remembered for an early send; older ones wait for the poll


class Worker:
    def __init__(self, deps: Deps, concurrency: int = 32, poll_s: float = 0.5) -> None:
        self._deps = deps
        # Sends wait on client endpoints: threads of their own, as many as the slots (the
        # event loop's default executor has cores + 4, which capped the slots at 6).
        self._senders = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook")
        # The outcomes of sends that finish together are recorded in one commit: a transaction
        # per send queued every sender behind the store's one write lock.
        self._records: Batcher[Callable[[Transaction], None]] = Batcher(
            lambda records: deps.store.run_transactions(list(records)),
            deps.store.run_transaction,
        )
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._wake = Wakeup()  # a send finished or deliveries arrived
        self._in_flight: set[asyncio.Task[None]] = set()
        self._fresh: deque[str] = deque(maxlen=MAX_FRESH)  # enqueued here, not yet claimed
        self._next_poll = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def nudge(self, paths: Sequence[str] = ()) -> None:
        """Send the deliveries at ``paths`` (just enqueued) now rather than at the next poll;
        safe from any thread (handlers run in a worker thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._arrived, list(paths))

    def _arrived(self, paths: list[str]) -> None:
        self._fresh.extend(paths)
        self._wake.set()

    async def _send(self, claimed: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
            outcome, record = await loop.run_in_executor(
                self._senders, send_only, claimed, self._deps
            )
            await self._records.submit(record)
            log.info("webhook attempt", delivery=claimed["path"], outcome=outcome)
        except Exception:
            log.exception("webhook attempt failed; it stays pending", delivery=claimed["path"])
        finally:
            self._wake.set()  # a slot is free

    async def run(self) -> None:
        """Fill the free slots with deliveries and send each of them. Those just enqueued in
        this process are claimed by path (point reads); the query for every due delivery, which
        reads all pending ones, runs only every ``poll_s``, for retries and what other
        instances enqueued. A delivery claimed both ways is sent once: the second claim finds
        it leased."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            free = self._concurrency - len(self._in_flight)
            claimed: list[dict[str, Any]] = []
            try:
                if free > 0 and self._fresh:
                    paths = [self._fresh.popleft() for _ in range(min(free, len(self._fresh)))]
                    claimed = await asyncio.to_thread(claim_paths, self._deps, paths)
                elif free > 0 and time.monotonic() >= self._next_poll:
                    self._next_poll = time.monotonic() + self._poll_s
                    claimed = await asyncio.to_thread(claim_due, self._deps, free)
                    if len(claimed) == free:
                        self._next_poll = 0.0  # every slot filled: more may be due
            except Exception:
                log.exception("could not claim webhook deliveries")
            for delivery in claimed:
                task = asyncio.create_task(self._send(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if self._concurrency > len(self._in_flight) and (
                self._fresh or time.monotonic() >= self._next_poll
            ):
                continue
            wait = max(0.0, self._next_poll - time.monotonic())
            await self._wake.wait(wait)

