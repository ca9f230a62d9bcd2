"""Retry backoff formula, subscription validation and building the topology from the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian.catalog import load_catalog
from meridian.domain.errors import NotFound, ValidationError
from meridian.embedded.pubsub import Broker, RetryPolicy, SubscriptionConfig


def test_backoff_is_min_times_two_to_the_failures_capped_at_max() -> None:
    policy = RetryPolicy(10, 600)
    assert [policy.delay(n) for n in range(0, 8)] == [0, 10, 20, 40, 80, 160, 320, 600]


@pytest.mark.parametrize(
    "config",
    [
        SubscriptionConfig("s", "t", ack_deadline_s=601),
        SubscriptionConfig("s", "t", dead_letter_topic="d", max_delivery_attempts=4),
        SubscriptionConfig("s", "t", dead_letter_topic="t"),
        SubscriptionConfig("s", "t", retry=RetryPolicy(20, 10)),
    ],
)
def test_invalid_subscription_settings_are_rejected(config: SubscriptionConfig) -> None:
    with pytest.raises(ValidationError):
        config.validated()


def test_dead_letter_topic_must_exist(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("t")
    with pytest.raises(NotFound):
        broker.create_subscription(SubscriptionConfig("s", "t", dead_letter_topic="missing"))


def test_catalog_topology_is_applied_once_and_shared_by_every_process(tmp_path: Path) -> None:
    catalog = load_catalog()
    broker = Broker(tmp_path)
    broker.apply_catalog(catalog, lambda service, path: f"http://127.0.0.1:1/{service}{path}")
    broker.apply_catalog(catalog, lambda service, path: f"http://127.0.0.1:1/{service}{path}")
    other = Broker(tmp_path)  # another process's view of the same data directory
    assert {t.name for t in other.list_topics()} == set(catalog.topics)
    subs = {s.name: s for s in other.list_subscriptions()}
    assert set(subs) == set(catalog.subscriptions)
    assert subs["telemetry-archive"].kind == "bigquery"
    assert subs["eta"].kind == "push" and subs["eta"].ordering
    assert subs["live-map"].kind == "pull"
    assert subs["billing"].dead_letter_topic == "billing.dlq"
    assert subs["billing-dead-letters"].topic == "billing.dlq"
    assert subs["billing-dead-letters"].kind == "pull"
