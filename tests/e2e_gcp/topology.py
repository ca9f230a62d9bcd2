"""Topics and subscriptions created with Google's own clients, as Terraform creates them from the
catalog (``terraform/modules/pubsub``): retention, filters, ordering, ack deadlines, retry and
dead-letter policies.

Push subscriptions are created as pull subscriptions: Google's Pub/Sub emulator pushes without a
token, so the harness's relay (``relay.py``) pulls them and pushes each message signed, as Pub/Sub
does. The BigQuery subscription is a pull one too (no BigQuery on the emulator). What the emulator
0.8.20 keeps but does not apply: filters (it delivers every message to every subscription). What
it refuses that Pub/Sub accepts: a subscription retention over 7 days (Pub/Sub's bound is now
31 days, reference §2.6), so the dead-letter subscriptions' 31 days are capped to 7 here.
"""

from __future__ import annotations

from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
from google.protobuf import duration_pb2

from meridian.catalog import Catalog
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig

# The emulator's bound on a subscription's retention (Pub/Sub's older one).
EMULATOR_MAX_SUBSCRIPTION_RETENTION_S = 7 * 86400


def _duration(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))


def subscription_configs(catalog: Catalog) -> list[SubscriptionConfig]:
    """Every subscription of the catalog, as the subscription Terraform would create."""
    return [
        SubscriptionConfig(
            name=name,
            topic=spec.topic,
            filter=spec.filter,
            ack_deadline_s=spec.ack_deadline_seconds,
            message_retention_s=spec.message_retention,
            ordering=spec.ordering,
            dead_letter_topic=spec.dead_letter_topic,
            max_delivery_attempts=spec.max_delivery_attempts or 5,
            retry=RetryPolicy(spec.retry.minimum_backoff, spec.retry.maximum_backoff)
            if spec.retry
            else None,
        )
        for name, spec in catalog.subscriptions.items()
    ]


class GoogleTopology:
    """Creates topics and pull subscriptions in ``project`` with the official admin calls (on the
    emulator named by ``PUBSUB_EMULATOR_HOST``)."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def topic_path(self, topic: str) -> str:
        return self.publisher.topic_path(self.project, topic)

    def create_topic(self, name: str, retention_s: float | None = None) -> None:
        request: dict[str, Any] = {"name": self.topic_path(name)}
        if retention_s is not None:
            request["message_retention_duration"] = _duration(retention_s)
        self.publisher.create_topic(request=request)

    def create_subscription(self, config: SubscriptionConfig) -> None:
        request: dict[str, Any] = {
            "name": self.subscriber.subscription_path(self.project, config.name),
            "topic": self.topic_path(config.topic),
            "ack_deadline_seconds": config.ack_deadline_s,
            "message_retention_duration": _duration(
                min(config.message_retention_s, EMULATOR_MAX_SUBSCRIPTION_RETENTION_S)
            ),
            "enable_message_ordering": config.ordering,
        }
        if config.filter:
            request["filter"] = config.filter
        if config.dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": self.topic_path(config.dead_letter_topic),
                "max_delivery_attempts": config.max_delivery_attempts,
            }
        if config.retry is not None:
            request["retry_policy"] = {
                "minimum_backoff": _duration(config.retry.minimum_backoff_s),
                "maximum_backoff": _duration(config.retry.maximum_backoff_s),
            }
        self.subscriber.create_subscription(request=request)

    def apply_catalog(self, catalog: Catalog) -> None:
        for name, topic in catalog.topics.items():
            self.create_topic(name, topic.message_retention)
        for config in subscription_configs(catalog):
            self.create_subscription(config)

    def close(self) -> None:
        self.publisher.stop()
        self.subscriber.close()
