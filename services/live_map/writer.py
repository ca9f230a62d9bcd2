"""The position writer: a pull consumer of ``live-map`` that keeps one ``live_map/{vehicle}``
document per vehicle, debounced (see ``positions``).

It runs as a background task of a live-map process (``app.py``'s lifespan): the ``writer`` role,
which ``meridian up`` runs as a process of its own beside the tracking streams (see
``bootstrap.MapOptions``). Messages are acknowledged only after the write that covers them has
committed, or after the ping was found stale, so a crash at any point loses no newest position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from meridian.concurrency.offload import InThread, Offload
from meridian.domain.errors import DecodeError, MeridianError
from meridian.observability import get_logger
from meridian.ports import DocumentStore, FlowControl, Subscriber, Transaction
from services.live_map.pings import PingDecoder
from services.live_map.positions import Debouncer, Position

log = get_logger(__name__)

SUBSCRIPTION = "live-map"
COLLECTION = "live_map"
# A vehicle holds at most one unacknowledged ping while it waits for its interval to end, so the
# flow-control window must exceed the fleet size, or the consumer would throttle itself to
# window / interval pings per second.
DEFAULT_MAX_OUTSTANDING = 20_000
# A commit every 20 ms at most: a due position waits ≤ 20 ms for its write (beyond the debounce),
# and at the peak (4,100 writes/s) a commit still carries ~80 writes, so the per-commit cost and
# the listeners it wakes stay small.
FLUSH_EVERY_S = 0.02
MAX_WRITES_PER_COMMIT = 400  # Firestore allows 500 writes per transaction
RETRY_S = 1.0
YIELD_EVERY = 50


@dataclass
class WriterStats:
    """Counters for the benchmark and for /healthz."""

    consumed: int = 0
    dropped: int = 0
    undecodable: int = 0
    written: int = 0
    commits: int = 0
    failed_commits: int = 0
    started: float = field(default_factory=time.monotonic)


def write_positions(
    store: DocumentStore, positions: Sequence[Position], written_at: datetime
) -> int:
    """Write positions in one transaction, each only if it is newer than the stored one (the
    guard that keeps markers from going backwards across restarts and across several writer
    instances, which the in-memory debouncer alone cannot). Returns how many were written."""

    def work(tx: Transaction) -> int:
        fresh = []
        for position in positions:
            current = tx.get(f"{COLLECTION}/{position.vehicle_id}")
            if current is None or current.data["recorded_at"] < position.recorded_at:
                fresh.append(position)
        for position in fresh:
            tx.set(f"{COLLECTION}/{position.vehicle_id}", position.document(written_at))
        return len(fresh)

    return store.run_transaction(work)


class PositionWriter:
    def __init__(
        self,
        store: DocumentStore,
        subscriber: Subscriber,
        pings: PingDecoder,
        clock: Callable[[], datetime],
        interval_s: float,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
        subscription: str = SUBSCRIPTION,
        monotonic: Callable[[], float] = time.monotonic,
        io: Offload | None = None,
    ) -> None:
        """``io`` runs the commits and acknowledgements (``meridian.concurrency.offload``); by
        default in a worker thread. The bootstrap gives ``Inline`` only to a process that runs
        the writer alone on the embedded runtime, where both are local CPU work: the thread hop
        of each call and two threads contending for the GIL cost 4-6% of such a process's CPU
        (side-by-side runs at 3,800 pings/s). Not with the tracking streams in the process (they
        would wait behind each commit), nor on Google's services (network calls)."""
        self.monotonic = monotonic
        self.io = io if io is not None else InThread()
        self.store = store
        self.subscriber = subscriber
        self.pings = pings
        self.clock = clock
        self.subscription = subscription
        self.flow = FlowControl(max_messages=max_outstanding)
        self.debouncer: Debouncer[str] = Debouncer(interval_s)
        self.stats = WriterStats()
        self._acks: list[str] = []
        self._nacks: list[str] = []

    async def run(self) -> None:
        """Consume and write until cancelled."""
        consumer = asyncio.create_task(self.consume(), name="live-map-consume")
        try:
            await self._flush_forever()
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)

    async def consume(self) -> None:
        """Feed the debouncer from the subscription (until the stream ends or is cancelled)."""
        # Locals: this loop runs 5,000 times a second at the peak.
        stats = self.stats
        decode = self.pings.decode
        offer = self.debouncer.offer
        monotonic = self.monotonic
        acks = self._acks
        async for received in self.subscriber.stream(self.subscription, self.flow):
            stats.consumed += 1
            ack_id = received.ack_id
            try:
                position = decode(received.message.data, received.message.attributes)
            except DecodeError as e:
                # Nacked, so the subscription's retry and dead-letter policy deals with it.
                stats.undecodable += 1
                log.warning("undecodable ping", message_id=received.message_id, error=str(e))
                self._nacks.append(ack_id)
                continue
            released = offer(position, ack_id, monotonic())
            if released:
                if released[0] == ack_id:
                    stats.dropped += 1
                acks.extend(released)
            if stats.consumed % YIELD_EVERY == 0:
                # Buffered messages are handed out without suspending; let the tracking streams
                # and the flush run between them.
                await asyncio.sleep(0)

    async def _flush_forever(self) -> None:
        # On a fixed cadence, not a fixed pause after each flush: a slow commit does not push the
        # next one back by a whole period.
        next_flush = time.monotonic()
        while True:
            await self.flush_once()
            next_flush = max(next_flush + FLUSH_EVERY_S, time.monotonic())
            await asyncio.sleep(next_flush - time.monotonic())

    async def flush_once(self) -> None:
        """Write what is due, then acknowledge what those writes (and stale pings) cover."""
        due = self.debouncer.take_due(self.monotonic())
        for start in range(0, len(due), MAX_WRITES_PER_COMMIT):
            chunk = due[start : start + MAX_WRITES_PER_COMMIT]
            try:
                written = await self.io.run(
                    write_positions, self.store, [p for p, _ in chunk], self.clock()
                )
            except MeridianError as e:
                self.stats.failed_commits += 1
                log.warning("live map write failed; retrying", error=str(e), count=len(chunk))
                self._acks.extend(self.debouncer.give_back(chunk, self.monotonic() + RETRY_S))
                continue
            self.stats.commits += 1
            self.stats.written += written
            self._acks.extend(receipt for _, receipt in chunk)
        # Taken by copy and clear, not by rebinding: ``consume`` holds the list.
        acks = self._acks[:]
        self._acks.clear()
        nacks, self._nacks = self._nacks, []
        if acks:
            await self.io.run(self.subscriber.acknowledge, self.subscription, acks)
        if nacks:
            await self.io.run(self.subscriber.nack, self.subscription, nacks)
