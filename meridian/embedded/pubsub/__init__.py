"""Embedded Pub/Sub: a durable SQLite broker with Google's semantics (reference §1-§4)."""

from meridian.embedded.pubsub.adapter import EmbeddedPubSub
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig, TopicConfig
from meridian.embedded.pubsub.metrics import SubscriptionMetrics

__all__ = [
    "Broker",
    "EmbeddedPubSub",
    "RetryPolicy",
    "SubscriptionConfig",
    "SubscriptionMetrics",
    "TopicConfig",
]
