"""Leases and acks of large batches on the SQLite broker (one statement per few hundred
messages): every message leased once per pull with its delivery count, every ack counted once
however often it is repeated, and a nacked message redelivered with its next attempt."""

from __future__ import annotations

from pathlib import Path

from meridian.embedded.pubsub import Broker, SubscriptionConfig
from meridian.embedded.pubsub.config import RetryPolicy
from meridian.ports import Message


def test_large_batches_are_leased_and_acked_exactly_once(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("work")
    broker.create_topic("work.dlq")
    broker.create_subscription(
        SubscriptionConfig(
            "work",
            "work",
            dead_letter_topic="work.dlq",
            max_delivery_attempts=5,
            retry=RetryPolicy(0.0, 0.0),
        )
    )
    for start in range(0, 1_200, 1_000):
        broker.publish(
            "work", [Message(f"{i}".encode()) for i in range(start, min(start + 1_000, 1_200))]
        )

    first = broker.pull("work", 1_000) + broker.pull("work", 1_000)
    assert len(first) == 1_200
    assert len({m.message_id for m in first}) == 1_200
    assert {m.delivery_attempt for m in first} == {1}
    assert broker.pull("work", 1_000) == []  # all leased
    assert broker.metrics("work").outstanding == 1_200

    nacked, acked = first[:10], first[10:]
    broker.modify_ack_deadline("work", [m.ack_id for m in nacked], 0)
    # Repeated acks, across more ids than one statement takes, count once each.
    broker.acknowledge("work", [m.ack_id for m in acked] + [m.ack_id for m in acked[:600]])
    metrics = broker.metrics("work")
    assert metrics.acked_total == 1_190
    assert metrics.backlog == 10

    again = broker.pull("work", 1_000)
    assert sorted(m.message_id for m in again) == sorted(m.message_id for m in nacked)
    assert {m.delivery_attempt for m in again} == {2}
    assert {m.ack_id.rsplit(".", 1)[1] for m in again} == {"2"}
    broker.acknowledge("work", [m.ack_id for m in again])
    assert broker.metrics("work").backlog == 0
    assert broker.metrics("work").acked_total == 1_200
