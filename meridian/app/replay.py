"""Dead-letter replay: republish what a subscription dead-lettered, once its cause is fixed.

``meridian replay-dead-letters`` runs it. It needs only the ports: a Subscriber on the
dead-letter subscription and a Publisher to the original topic.
"""

from __future__ import annotations

from meridian.ports import Message, Publisher, Subscriber

# Pub/Sub's attributes on a dead-lettered message (CloudPubSubDeadLetterSourceSubscription, ...).
DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"


def replay_dead_letters(
    subscriber: Subscriber,
    publisher: Publisher,
    dead_letters: str,
    topic: str,
    source_subscription: str | None = None,
    max_messages: int = 1000,
) -> int:
    """Republish dead letters to ``topic`` (attributes as originally published) and ack them.

    Only those dead-lettered from ``source_subscription`` when given; others are nacked back.
    Every reactor deduplicates by event id, so reactors that had already processed a replayed
    event acknowledge it without a second effect. Returns how many were replayed.
    """
    replayed = 0
    while replayed < max_messages:
        batch = subscriber.pull(dead_letters, min(100, max_messages - replayed))
        if not batch:
            return replayed
        chosen, others = [], []
        for received in batch:
            source = received.message.attributes.get(f"{DEAD_LETTER_PREFIX}SourceSubscription", "")
            if source_subscription is None or source.rsplit("/", 1)[-1] == source_subscription:
                chosen.append(received)
            else:
                others.append(received)
        if chosen:
            publisher.publish(topic, [_original(r.message) for r in chosen])
            subscriber.acknowledge(dead_letters, [r.ack_id for r in chosen])
            replayed += len(chosen)
        if others:
            subscriber.nack(dead_letters, [r.ack_id for r in others])
            if not chosen:
                return replayed
    return replayed


def _original(message: Message) -> Message:
    attributes = {
        k: v for k, v in message.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)
    }
    return Message(message.data, attributes, message.ordering_key)
