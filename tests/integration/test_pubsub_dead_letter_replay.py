"""Dead letters per consumer on the embedded broker built from the real catalog: each subscription
dead-letters to its own topic, and a replay takes all of one consumer's dead letters, however
many, whatever other consumers dead-lettered before them (issue #25, item 1)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meridian.app.replay import inspect_dead_letters, replay_dead_letters
from meridian.catalog import load_catalog
from meridian.embedded.pubsub import Broker, EmbeddedPubSub, SubscriptionConfig
from meridian.ports import Message, Publisher, ReceivedMessage

# Later than any backoff of the catalog (600 s at most), so every nacked message is due again.
PAST_EVERY_BACKOFF_S = 601.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time() - 86400  # so what the test dead-letters is in the past

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(tmp_path: Path, clock: Clock) -> Broker:
    broker = Broker(tmp_path, clock=clock)
    broker.apply_catalog(
        load_catalog(), lambda service, path: f"http://127.0.0.1:9/{service}{path}"
    )
    return broker


def _event(event_type: str, n: int) -> Message:
    return Message(
        f"{event_type}-{n}".encode(),
        {"eventType": event_type, "eventId": f"evt-{event_type}-{n}"},
        f"key-{n}",
    )


def _dead_letter(broker: Broker, clock: Clock, subscription: str) -> None:
    """Fail every message of ``subscription`` until its dead-letter policy gives up on it."""
    while batch := broker.pull(subscription, 1000):
        broker.modify_ack_deadline(subscription, [r.ack_id for r in batch], 0)
        clock.now += PAST_EVERY_BACKOFF_S


def _drain(broker: Broker, subscription: str) -> list[ReceivedMessage]:
    received = []
    while batch := broker.pull(subscription, 1000):
        broker.acknowledge(subscription, [r.ack_id for r in batch])
        received += batch
    return received


def test_each_consumer_dead_letters_to_its_own_topic(broker: Broker, clock: Clock) -> None:
    broker.publish("logistics.events", [_event("ShipmentClosed", 1)])  # billing, client-webhook
    _dead_letter(broker, clock, "billing")
    assert broker.get_subscription("billing").dead_letter_topic == "billing.dlq"
    (dead,) = _drain(broker, "billing-dead-letters")
    assert dead.message.attributes["CloudPubSubDeadLetterSourceSubscription"] == "billing"
    assert _drain(broker, "client-webhook-dead-letters") == []
    assert len(_drain(broker, "client-webhook")) == 1  # its own copy, untouched


def test_replay_takes_both_of_billings_dead_letters_behind_120_of_another_consumer(
    broker: Broker, clock: Clock
) -> None:
    """The report: 120 dead letters of another consumer ahead of billing's two replayed 0."""
    pubsub = EmbeddedPubSub(broker)
    broker.publish("logistics.events", [_event("GeofenceCrossed", n) for n in range(120)])  # eta
    _dead_letter(broker, clock, "eta")
    broker.publish("logistics.events", [_event("ShipmentClosed", n) for n in range(2)])
    _dead_letter(broker, clock, "billing")
    assert broker.metrics("eta").dead_letter_depth == 120
    assert broker.metrics("billing").dead_letter_depth == 2

    listed = inspect_dead_letters(pubsub, "billing-dead-letters")
    assert sorted(r.message.attributes["eventId"] for r in listed) == [
        "evt-ShipmentClosed-0",
        "evt-ShipmentClosed-1",
    ]
    assert broker.metrics("billing").dead_letter_depth == 2  # a dry run leaves them there

    _drain(broker, "client-webhook")  # its own copies of the two events, delivered fine
    assert replay_dead_letters(pubsub, pubsub, "billing-dead-letters", "logistics.events") == 2

    assert broker.metrics("billing").dead_letter_depth == 0
    assert broker.metrics("eta").dead_letter_depth == 120  # another consumer's, untouched
    redelivered = _drain(broker, "billing")
    assert sorted(r.message.data for r in redelivered) == [b"ShipmentClosed-0", b"ShipmentClosed-1"]
    for r in redelivered:  # as originally published: attributes and ordering key
        n = r.message.data.decode().rsplit("-", 1)[1]
        assert r.message.attributes == {
            "eventType": "ShipmentClosed",
            "eventId": f"evt-ShipmentClosed-{n}",
        }
        assert r.message.ordering_key == f"key-{n}"
    # Pub/Sub cannot publish to one subscription: the topic's other matching consumer gets the
    # replay too, and deduplicates it by event id; no consumer the filters exclude sees it.
    assert len(_drain(broker, "client-webhook")) == 2
    assert _drain(broker, "eta") == []


def test_replay_takes_all_250_of_a_consumers_own_dead_letters(broker: Broker, clock: Clock) -> None:
    pubsub = EmbeddedPubSub(broker)
    broker.publish("logistics.events", [_event("ShipmentClosed", n) for n in range(250)])
    _dead_letter(broker, clock, "billing")
    assert broker.metrics("billing").dead_letter_depth == 250
    assert len(inspect_dead_letters(pubsub, "billing-dead-letters")) == 250
    assert len(inspect_dead_letters(pubsub, "billing-dead-letters", limit=30)) == 30

    counts: list[int] = []
    replayed = replay_dead_letters(
        pubsub, pubsub, "billing-dead-letters", "logistics.events", progress=counts.append
    )

    assert replayed == 250 and counts == [100, 200, 250]
    assert broker.metrics("billing").dead_letter_depth == 0
    assert len({r.message.data for r in _drain(broker, "billing")}) == 250


def test_replay_leaves_dead_letters_newer_than_its_start_for_the_next_one(
    broker: Broker, clock: Clock
) -> None:
    """A consumer still failing dead-letters the replayed messages again: the replay ends."""
    pubsub = EmbeddedPubSub(broker)
    broker.publish("logistics.events", [_event("ShipmentClosed", 1)])
    _dead_letter(broker, clock, "billing")
    started = datetime.fromtimestamp(clock.now, UTC)
    clock.now += 1
    broker.publish("logistics.events", [_event("ShipmentClosed", 2)])
    _dead_letter(broker, clock, "billing")

    replayed = replay_dead_letters(
        pubsub, pubsub, "billing-dead-letters", "logistics.events", until=started
    )

    assert replayed == 1
    (left,) = _drain(broker, "billing-dead-letters")  # nacked back, not lost
    assert left.message.data == b"ShipmentClosed-2"


def test_a_failed_republish_acknowledges_nothing(broker: Broker, clock: Clock) -> None:
    class Down(Publisher):
        def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
            raise ConnectionError("Pub/Sub unavailable")

    pubsub = EmbeddedPubSub(broker)
    broker.publish("logistics.events", [_event("ShipmentClosed", n) for n in range(3)])
    _dead_letter(broker, clock, "billing")

    with pytest.raises(ConnectionError):
        replay_dead_letters(pubsub, Down(), "billing-dead-letters", "logistics.events")

    assert len(_drain(broker, "billing-dead-letters")) == 3


def test_a_data_dir_from_the_shared_dead_letter_topic_catalog_follows_the_new_one(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("logistics.events")
    broker.create_topic("logistics.events.dlq")
    broker.create_subscription(
        SubscriptionConfig(
            "billing",
            "logistics.events",
            'attributes.eventType = "ParcelDelivered" OR attributes.eventType = "ShipmentClosed"',
            dead_letter_topic="logistics.events.dlq",
        )
    )
    broker.apply_catalog(
        load_catalog(), lambda service, path: f"http://127.0.0.1:9/{service}{path}"
    )
    billing = Broker(tmp_path).get_subscription("billing")
    assert billing.dead_letter_topic == "billing.dlq"
    assert billing.push_endpoint == "http://127.0.0.1:9/billing/events"
