"""Per-subscription metrics, as Cloud Monitoring shows them for Pub/Sub.

``num_undelivered_messages`` → backlog, ``oldest_unacked_message_age``, the dead-letter topic's
depth of messages from this subscription, and the delivery rate between two readings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from meridian.embedded.pubsub.store import Store
from meridian.embedded.pubsub.topology import Topology


@dataclass(frozen=True)
class SubscriptionMetrics:
    subscription: str
    backlog: int  # unacknowledged messages, leased or not
    backlog_bytes: int
    outstanding: int  # leased to a consumer right now
    oldest_unacked_age_s: float
    delivered_total: int
    acked_total: int
    dead_lettered_total: int
    dead_letter_depth: int  # of this subscription's messages, still unacked on the DLQ topic
    delivery_rate: float  # deliveries per second since the previous reading in this process


class Metrics:
    def __init__(self, store: Store, topology: Topology, clock: Callable[[], float]) -> None:
        self._store = store
        self._topology = topology
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def of(self, subscription: str) -> SubscriptionMetrics:
        db = self._store.connection()
        sub = self._topology.subscription(subscription, db)
        now = self._clock()
        backlog, size, outstanding, oldest = db.execute(
            "SELECT count(*), coalesce(sum(length(m.data)), 0),"
            " coalesce(sum(b.leased_until > ?), 0), min(m.publish_time)"
            " FROM backlog b JOIN messages m ON m.id = b.msg_id WHERE b.sub_id = ?",
            (now, sub.id),
        ).fetchone()
        delivered, acked, dead_lettered = db.execute(
            "SELECT delivered, acked, dead_lettered FROM subscriptions WHERE id = ?", (sub.id,)
        ).fetchone()
        depth = 0
        if sub.config.dead_letter_topic:
            dlq = self._topology.topic(sub.config.dead_letter_topic, db)
            (depth,) = db.execute(
                "SELECT count(DISTINCT b.msg_id) FROM backlog b JOIN messages m ON m.id = b.msg_id"
                " WHERE m.topic_id = ? AND json_extract(m.attributes,"
                " '$.CloudPubSubDeadLetterSourceSubscription') = ?",
                (dlq.id, sub.name),
            ).fetchone()
        with self._lock:
            previous = self._last.get(subscription)
            self._last[subscription] = (now, delivered)
        rate = 0.0
        if previous and now > previous[0]:
            rate = (delivered - previous[1]) / (now - previous[0])
        return SubscriptionMetrics(
            subscription=subscription,
            backlog=backlog,
            backlog_bytes=size,
            outstanding=outstanding,
            oldest_unacked_age_s=max(0.0, now - oldest) if oldest is not None else 0.0,
            delivered_total=delivered,
            acked_total=acked,
            dead_lettered_total=dead_lettered,
            dead_letter_depth=depth,
            delivery_rate=rate,
        )
