"""Fan-out of one published batch on the SQLite broker: each subscription's backlog gets exactly
the messages its filter accepts, with the ordering key only where the subscription orders, whether
its filter accepts the whole batch, part of it or none of it."""

from __future__ import annotations

from pathlib import Path

from meridian.embedded.pubsub import Broker, SubscriptionConfig
from meridian.embedded.pubsub.publishing import ROWS_PER_INSERT
from meridian.ports import Message


def _backlog(broker: Broker, subscription: str) -> list[tuple[int, float, str | None]]:
    sub_id = broker.topology.subscription(subscription).id
    rows = broker.store.connection().execute(
        "SELECT msg_id, due, ordering_key FROM backlog WHERE sub_id = ? ORDER BY msg_id", (sub_id,)
    )
    return [tuple(row) for row in rows]


def test_each_subscription_gets_the_messages_its_filter_accepts(tmp_path: Path) -> None:
    broker = Broker(tmp_path, clock=lambda: 1_000.0)
    broker.create_topic("t")
    subscriptions = {
        "all-ordered": SubscriptionConfig("all-ordered", "t", ordering=True),
        "all": SubscriptionConfig("all", "t"),
        "pings": SubscriptionConfig("pings", "t", filter='attributes.eventType = "Ping"'),
        "stops-ordered": SubscriptionConfig(
            "stops-ordered", "t", filter='attributes.eventType = "Stop"', ordering=True
        ),
        "none": SubscriptionConfig("none", "t", filter='attributes.eventType = "Other"'),
    }
    for config in subscriptions.values():
        broker.create_subscription(config)
    batch = [
        Message(b"0", {"eventType": "Ping"}, "veh-1"),
        Message(b"1", {"eventType": "Stop"}, "veh-1"),
        Message(b"2", {"eventType": "Ping"}),
        Message(b"3", {"eventType": "Stop"}, "veh-2"),
    ]
    broker.publish("t", [Message(b"earlier", {"eventType": "Ping"}, "veh-9")])
    ids = [int(i) for i in broker.publish("t", batch)]

    def rows(indexes: list[int], ordered: bool) -> list[tuple[int, float, str | None]]:
        return [
            (ids[i], 1_000.0, (batch[i].ordering_key or None) if ordered else None) for i in indexes
        ]

    assert _backlog(broker, "all-ordered")[1:] == rows([0, 1, 2, 3], ordered=True)
    assert _backlog(broker, "all")[1:] == rows([0, 1, 2, 3], ordered=False)
    assert _backlog(broker, "pings")[1:] == rows([0, 2], ordered=False)
    assert _backlog(broker, "stops-ordered") == rows([1, 3], ordered=True)
    assert _backlog(broker, "none") == []

    # What was stored is what is delivered, attributes included.
    delivered = broker.pull("stops-ordered", 10)
    assert [(m.message.data, dict(m.message.attributes)) for m in delivered] == [
        (b"1", {"eventType": "Stop"}),
        (b"3", {"eventType": "Stop"}),
    ]
    assert [m.message.ordering_key for m in delivered] == ["veh-1", "veh-2"]


def test_attributes_round_trip_whatever_their_characters(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("t")
    broker.create_subscription(SubscriptionConfig("s", "t"))
    attributes = {"name": 'Zoë "quoted" \\ back', "line": "a\u2028b\tc", "empty": ""}
    broker.publish("t", [Message(b"x", attributes), Message(b"", {"only": "attributes"})])
    delivered = broker.pull("s", 10)
    assert [dict(m.message.attributes) for m in delivered] == [attributes, {"only": "attributes"}]


def test_a_batch_larger_than_one_insert_statement_keeps_every_message_and_its_order(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("t")
    broker.create_subscription(SubscriptionConfig("s", "t", ordering=True))
    count = 2 * ROWS_PER_INSERT + 7  # two full statements and a short one
    batch = [Message(f"{i}".encode(), {"n": str(i)}, f"k{i % 3}") for i in range(count)]
    ids = broker.publish("t", batch)
    assert [int(i) for i in ids] == list(range(int(ids[0]), int(ids[0]) + count))
    stored = broker.store.connection().execute(
        "SELECT id, data, attributes, ordering_key FROM messages ORDER BY id"
    )
    assert [(str(i), bytes(d), a, k) for i, d, a, k in stored] == [
        (ids[i], f"{i}".encode(), f'{{"n":"{i}"}}', f"k{i % 3}") for i in range(count)
    ]
    assert len(_backlog(broker, "s")) == count
