"""Dead-letter replay: republish what one consumer dead-lettered, once its cause is fixed.

Every subscription dead-letters to a topic of its own, kept by one subscription (the catalog's
rule, ``meridian.catalog``), so a consumer's dead letters are exactly that subscription's backlog
and nobody else's. ``replay_dead_letters`` pulls it to the end and republishes each message as it
was originally published (its attributes without Pub/Sub's ``CloudPubSubDeadLetter*`` ones, its
ordering key) to the consumer's topic, acknowledging a batch only once its publish returned.

Pub/Sub cannot publish to one subscription, so every subscription of the topic whose filter
accepts a replayed message receives it again: the reactors on ``logistics.events`` deduplicate by
event id, so only the one that had failed acts on it; a replayed ping also reaches the telemetry
archive again. ``meridian
replay-dead-letters`` runs both functions (``--dry-run``: ``inspect_dead_letters``); they need
only the ports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from meridian.ports import Message, Publisher, ReceivedMessage, Subscriber

# Pub/Sub's attributes on a dead-lettered message (CloudPubSubDeadLetterSourceSubscription, ...).
DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
# A pull that must not block may come back empty from Pub/Sub while messages wait, so the end of
# the backlog is an empty pull this many times in a row (the embedded broker's first is exact).
EMPTY_PULLS = 3
EMPTY_PULL_PAUSE_S = 0.1


def replay_dead_letters(
    subscriber: Subscriber,
    publisher: Publisher,
    dead_letters: str,
    topic: str,
    limit: int | None = None,
    batch_size: int = 100,
    progress: Callable[[int], None] | None = None,
    until: datetime | None = None,
) -> int:
    """Republish every message of the ``dead_letters`` subscription (at most ``limit``) to
    ``topic``, as originally published, then acknowledge it. Calls ``progress`` with the running
    count after each batch; returns how many were replayed.

    Only dead letters that arrived before ``until`` (by default, when the replay starts) are
    replayed: one the consumer dead-letters again meanwhile is left for the next replay, so a
    replay onto a consumer that still fails ends. A batch whose publish fails is nacked, so it
    waits for the next replay, and the error propagates."""
    until = until or datetime.now(UTC)
    replayed = 0
    later: list[list[str]] = []
    try:
        for batch in _batches(subscriber, dead_letters, limit, batch_size):
            waiting = [r for r in batch if r.publish_time < until]
            # Newer ones stay leased until the end, so the pulls reach the older ones behind them.
            later.append([r.ack_id for r in batch if r.publish_time >= until])
            if not waiting:
                break
            try:
                publisher.publish(topic, [_original(r.message) for r in waiting])
            except BaseException:
                subscriber.nack(dead_letters, [r.ack_id for r in waiting])
                raise
            subscriber.acknowledge(dead_letters, [r.ack_id for r in waiting])
            replayed += len(waiting)
            if progress is not None:
                progress(replayed)
    finally:
        for ack_ids in filter(None, later):
            subscriber.nack(dead_letters, ack_ids)
    return replayed


def inspect_dead_letters(
    subscriber: Subscriber,
    dead_letters: str,
    limit: int | None = None,
    batch_size: int = 100,
    progress: Callable[[int], None] | None = None,
) -> list[ReceivedMessage]:
    """The messages of the ``dead_letters`` subscription (at most ``limit``), each once, left
    where they are: all are nacked back at the end, nothing is republished or acknowledged."""
    seen: dict[str, ReceivedMessage] = {}
    leased: list[list[str]] = []
    try:
        for batch in _batches(subscriber, dead_letters, limit, batch_size):
            leased.append([r.ack_id for r in batch])
            fresh = [r for r in batch if r.message_id not in seen]
            if not fresh:  # a lease ran out and the backlog came round again
                break
            seen.update((r.message_id, r) for r in fresh)
            if progress is not None:
                progress(len(seen))
    finally:
        for ack_ids in leased:
            subscriber.nack(dead_letters, ack_ids)
    return list(seen.values())[:limit]


def _batches(
    subscriber: Subscriber, dead_letters: str, limit: int | None, batch_size: int
) -> Iterator[list[ReceivedMessage]]:
    taken, empty = 0, 0
    while limit is None or taken < limit:
        want = batch_size if limit is None else min(batch_size, limit - taken)
        batch = subscriber.pull(dead_letters, want)
        if not batch:
            empty += 1
            if empty == EMPTY_PULLS:
                return
            time.sleep(EMPTY_PULL_PAUSE_S)
            continue
        empty = 0
        taken += len(batch)
        yield batch


def _original(message: Message) -> Message:
    attributes = {
        k: v for k, v in message.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)
    }
    return Message(message.data, attributes, message.ordering_key)
