"""The webhook sender, run beside the push endpoint in the reactor's process: deliveries enqueued
here are sent at once by sender threads; a loop on the event loop polls every ``poll_s`` for the
rest (scheduled retries, what other instances enqueued). On Cloud Run the service needs CPU
always allocated (terraform) for the poll to run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from meridian.concurrency.wakeup import Wakeup
from meridian.observability import get_logger
from services.reactors.webhook.handlers import (
    LEASE,
    SEND_TIMEOUT_S,
    Deps,
    claim_due,
    send_claimed,
)

log = get_logger(__name__)
MAX_FRESH = 10_000  # deliveries remembered for an early send; older ones wait for the poll
# A delivery claimed on enqueue is sent only if its lease outlasts the send with room to spare.
FRESH_CLAIM_S = (LEASE - timedelta(seconds=SEND_TIMEOUT_S * 2)).total_seconds()
_Fresh = tuple[float, dict[str, Any]]  # a delivery claimed as it was enqueued, and when


class _Sender:
    """A sender thread, idle until handed work (``go``)."""

    def __init__(self, worker: Worker, name: str) -> None:
        self.claimed: dict[str, Any] | None = None  # a polled claim to send first
        self._worker = worker
        self._go = threading.Event()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def go(self, claimed: dict[str, Any] | None) -> None:
        self.claimed = claimed
        self._go.set()

    def _serve(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            claimed, self.claimed = self.claimed, None
            self._worker.drain(self, claimed)


class Worker:
    """Up to ``concurrency`` deliveries in flight, each in a sender thread of its own (a send
    waits on a client's endpoint, which may be slow).

    A sender thread sends and records a delivery (claimed as it was enqueued, or by the poll),
    then takes the next fresh one, if any, before it gives its slot back. The
    handler's thread hands fresh deliveries straight to the sender threads: the hops through the
    event loop (a claim in a thread of its own, the send in another, the outcome's commit in a
    third) cost more CPU than the delivery's own work. The thread idle the shortest time is
    woken first, so under a steady flow a few threads (and their store connections, whose
    caches are then still warm) do the sends.
    """

    def __init__(self, deps: Deps, concurrency: int = 32, poll_s: float = 0.5) -> None:
        self._deps = deps
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._lock = threading.Lock()  # guards everything below but _wake and _loop
        self._fresh: deque[_Fresh] = deque(maxlen=MAX_FRESH)  # enqueued here, not yet sent
        self._senders = 0  # threads started
        self._idle: list[_Sender] = []  # a stack: the last to go idle is the first woken
        self._busy = 0  # slots taken by sender threads
        self._woken = 0  # of them, woken for a fresh delivery they have not taken yet
        self._poll_waits = False  # the last poll filled every slot: poll again when one frees
        self._wake = Wakeup()
        self._loop: asyncio.AbstractEventLoop | None = None

    def send_now(self, claimed: Sequence[dict[str, Any]]) -> None:
        """Send deliveries claimed as they were enqueued (``handlers.enqueue_claimed``) now
        rather than at the next poll; safe from any thread (handlers run in a worker thread),
        ignored while not running. One that waits for a slot until its lease may run out before
        the send ends is left to the poll, which takes it again once the lease has expired."""
        now = time.monotonic()
        self._arrived([(now, c) for c in claimed])

    def _arrived(self, items: list[_Fresh]) -> None:
        if self._loop is None or not items:
            return
        with self._lock:
            self._fresh.extend(items)
            waking = min(len(self._fresh) - self._woken, self._concurrency - self._busy)
            senders = [self._take_sender() for _ in range(max(0, waking))]
            self._woken += len(senders)
        for sender in senders:
            sender.go(None)

    def _take_sender(self) -> _Sender:
        """An idle sender thread (or a new one) for a slot; with the lock held."""
        self._busy += 1
        if self._idle:
            return self._idle.pop()
        self._senders += 1
        return _Sender(self, f"webhook_{self._senders}")

    def drain(self, sender: _Sender, claimed: dict[str, Any] | None) -> None:
        """In ``sender``'s thread, holding a slot: send ``claimed`` (if given), then the fresh
        deliveries one by one until none is left; then free the slot."""
        woken = claimed is None
        while True:
            if claimed is not None:
                self._send(claimed)
            with self._lock:
                if woken:
                    self._woken -= 1
                    woken = False
                item = self._fresh.popleft() if self._fresh else None
                if item is None:
                    self._busy -= 1
                    self._idle.append(sender)
                    wake_poll, self._poll_waits = self._poll_waits, False
            if item is None:
                loop = self._loop
                if wake_poll and loop is not None:
                    loop.call_soon_threadsafe(self._wake.set)
                return
            claimed_at, fresh = item
            claimed = fresh if time.monotonic() - claimed_at < FRESH_CLAIM_S else None

    def _send(self, claimed: dict[str, Any]) -> None:
        try:
            outcome = send_claimed(claimed, self._deps)
            log.info("webhook attempt", delivery=claimed["path"], outcome=outcome)
        except Exception:
            log.exception("webhook attempt failed; it stays pending", delivery=claimed["path"])

    async def run(self) -> None:
        """Every ``poll_s``, claim the due deliveries for the free slots (the query reads all
        pending ones) and send each in a sender thread. A delivery claimed as it was enqueued is
        leased, so the poll does not take it again while it is being sent."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                with self._lock:
                    free = self._concurrency - self._busy
                claimed: list[dict[str, Any]] = []
                if free > 0:
                    try:
                        claimed = await asyncio.to_thread(claim_due, self._deps, free)
                    except Exception:
                        log.exception("could not claim webhook deliveries")
                with self._lock:
                    senders = [self._take_sender() for _ in claimed]
                    # Every slot filled: more may be due, so poll again as soon as one frees.
                    self._poll_waits = free <= 0 or len(claimed) == free
                    again = self._poll_waits and self._busy < self._concurrency
                for sender, delivery in zip(senders, claimed, strict=True):
                    sender.go(delivery)
                if not again:
                    await self._wake.wait(self._poll_s)
        finally:
            self._loop = None
