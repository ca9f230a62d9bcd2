"""The Publisher and Subscriber ports on the embedded broker, with a streaming pull that keeps
flow control and extends the leases of messages the consumer still holds (as Google's client
library does), so a slow handler is not redelivered while it works."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from meridian.embedded.pubsub.broker import Broker
from meridian.ports import FlowControl, Message, Publisher, ReceivedMessage, Subscriber

PULL_BATCH = 500
IDLE_WAIT_S = 0.05
# How often a stream looks for leases to extend while it hands out messages: often enough for
# any ack deadline (10 s at least), rarely enough to cost nothing per message.
EXTEND_CHECK_S = 1.0


class _Outstanding:
    """Messages handed out by one stream and not yet acked or nacked (thread-safe: acks may come
    from a handler's worker thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self.sizes: dict[str, int] = {}
        self.extended: dict[str, float] = {}
        self.bytes = 0
        self.freed = asyncio.Event()

    def add(self, messages: Sequence[ReceivedMessage]) -> None:
        now = time.monotonic()
        with self._lock:
            sizes = self.sizes
            extended = self.extended
            added = 0
            for message in messages:
                ack_id = message.ack_id
                size = len(message.message.data)
                sizes[ack_id] = size
                extended.pop(ack_id, None)  # keep ``extended`` in time order
                extended[ack_id] = now
                added += size
            self.bytes += added

    def release(self, ack_ids: Iterable[str]) -> None:
        released = False
        with self._lock:
            for ack_id in ack_ids:
                size = self.sizes.pop(ack_id, None)
                if size is not None:
                    self.extended.pop(ack_id, None)
                    self.bytes -= size
                    released = True
        if released:
            self._loop.call_soon_threadsafe(self.freed.set)

    def due_for_extension(self, older_than: float) -> list[str]:
        """Leases last extended ``older_than`` seconds ago, now marked extended.

        ``extended`` is kept in the order of its times (an entry is re-inserted at the end when
        extended), so the scan stops at the first fresh lease: O(due), not O(outstanding). The
        stream calls this every ``EXTEND_CHECK_S`` while it hands out messages, with up to tens
        of thousands held."""
        with self._lock:
            now = time.monotonic()
            stale = []
            for ack_id, at in self.extended.items():
                if now - at < older_than:
                    break
                stale.append(ack_id)
            for ack_id in stale:
                del self.extended[ack_id]
                self.extended[ack_id] = now
            return stale

    def __len__(self) -> int:
        return len(self.sizes)


class EmbeddedPubSub(Publisher, Subscriber):
    """Both messaging ports over one broker; what services get in embedded mode."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._streams: list[_Outstanding] = []
        self._streams_lock = threading.Lock()

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        return self.broker.publish(topic, messages)

    def pull(self, subscription: str, max_messages: int = 100) -> list[ReceivedMessage]:
        return self.broker.pull(subscription, max_messages)

    def acknowledge(self, subscription: str, ack_ids: Iterable[str]) -> None:
        ack_ids = list(ack_ids)
        self.broker.acknowledge(subscription, ack_ids)
        self._release(ack_ids)

    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int) -> None:
        ack_ids = list(ack_ids)
        self.broker.modify_ack_deadline(subscription, ack_ids, seconds)
        if seconds == 0:
            self._release(ack_ids)

    def seek(self, subscription: str, to: datetime | str) -> None:
        self.broker.seek(subscription, to)

    def create_snapshot(self, snapshot: str, subscription: str) -> None:
        self.broker.create_snapshot(snapshot, subscription)

    def _release(self, ack_ids: list[str]) -> None:
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.release(ack_ids)

    async def stream(
        self, subscription: str, flow: FlowControl = FlowControl()
    ) -> AsyncIterator[ReceivedMessage]:
        config = await asyncio.to_thread(self.broker.get_subscription, subscription)
        extend_after = config.ack_deadline_s / 2
        outstanding = _Outstanding(asyncio.get_running_loop())
        with self._streams_lock:
            self._streams.append(outstanding)
        buffered: deque[ReceivedMessage] = deque()
        next_check = 0.0
        try:
            while True:
                # Checked on a clock, not per message: a consumer that holds messages for long
                # still gets its leases extended in time, a fast one pays nothing per message.
                if time.monotonic() >= next_check:
                    stale = outstanding.due_for_extension(extend_after)
                    if stale:
                        await asyncio.to_thread(
                            self.broker.modify_ack_deadline,
                            subscription,
                            stale,
                            config.ack_deadline_s,
                        )
                    next_check = time.monotonic() + min(EXTEND_CHECK_S, extend_after / 2)
                if buffered:
                    message = buffered.popleft()
                    yield message
                    continue
                room = flow.max_messages - len(outstanding)
                if room <= 0 or outstanding.bytes >= flow.max_bytes:
                    outstanding.freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(outstanding.freed.wait(), extend_after)
                    continue
                batch = await asyncio.to_thread(
                    self.broker.pull, subscription, min(room, PULL_BATCH)
                )
                if not batch:
                    await asyncio.to_thread(self.broker.wait, IDLE_WAIT_S)
                    continue
                outstanding.add(batch)
                buffered.extend(batch)
        finally:
            with self._streams_lock:
                self._streams.remove(outstanding)
            if buffered:  # leased but never handed to the consumer: give them back now
                self.broker.modify_ack_deadline(subscription, [m.ack_id for m in buffered], 0)
