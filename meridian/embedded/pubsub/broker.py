"""The embedded Pub/Sub broker: one object per process over the data directory's database.

It composes the topology, publishing, delivery, replay and metrics parts, applies the event
catalog, and lets waiters sleep until something may be deliverable: woken at once by a publish
in this process, and by a cheap ``PRAGMA data_version`` poll for commits by other processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from meridian.catalog import BigQueryDelivery, Catalog, PushDelivery
from meridian.config import Settings
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig, TopicConfig
from meridian.embedded.pubsub.delivery import Delivery
from meridian.embedded.pubsub.metrics import Metrics, SubscriptionMetrics
from meridian.embedded.pubsub.publishing import publish
from meridian.embedded.pubsub.replay import Replay, SnapshotInfo
from meridian.embedded.pubsub.store import Store
from meridian.embedded.pubsub.topology import Topology
from meridian.ports import Message, ReceivedMessage

DB_FILE = "pubsub.sqlite3"


PURGE_EVERY_S = 60.0


class Broker:
    """Pub/Sub's semantics over SQLite; safe to open from many processes on one data dir."""

    def __init__(
        self,
        data_dir: Path | str,
        project: str = "meridian-local",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.project = project
        self.clock = clock
        self.store = Store(self.data_dir / DB_FILE)
        self.topology = Topology(self.store, clock)
        self._delivery = Delivery(self.store, self.topology, clock, project)
        self._replay = Replay(self.store, self.topology, clock)
        self._metrics = Metrics(self.store, self.topology, clock)
        self._published = threading.Condition()
        self._generation = 0
        self._next_purge = 0.0

    # Topology -------------------------------------------------------------------------------

    def create_topic(
        self, name: str, retention_s: float | None = None, exist_ok: bool = False
    ) -> TopicConfig:
        config = TopicConfig(name) if retention_s is None else TopicConfig(name, retention_s)
        return self.topology.create_topic(config, exist_ok)

    def get_topic(self, name: str) -> TopicConfig:
        return self.topology.topic(name).config

    def list_topics(self) -> list[TopicConfig]:
        return self.topology.topics()

    def delete_topic(self, name: str) -> None:
        self.topology.delete_topic(name)

    def create_subscription(
        self, config: SubscriptionConfig, exist_ok: bool = False
    ) -> SubscriptionConfig:
        return self.topology.create_subscription(config, exist_ok)

    def update_subscription(self, config: SubscriptionConfig) -> SubscriptionConfig:
        return self.topology.update_subscription(config)

    def get_subscription(self, name: str) -> SubscriptionConfig:
        return self.topology.subscription(name).config

    def list_subscriptions(self, topic: str | None = None) -> list[SubscriptionConfig]:
        if topic is not None:
            self.topology.topic(topic)
        return self.topology.subscriptions(topic)

    def delete_subscription(self, name: str) -> None:
        self.topology.delete_subscription(name)

    def apply_catalog(
        self,
        catalog: Catalog,
        push_endpoint: Callable[[str, str], str],
        push_identity: str | None = None,
    ) -> None:
        """Create the catalog's topics and subscriptions that do not exist yet, and bring an
        existing subscription to the catalog's settings where Pub/Sub can change them in place
        (dead-letter policy, retry, deadlines, push endpoint; like a Terraform apply), so a data
        directory made by an older catalog follows the new one. A changed topic or filter would
        need a new subscription (and lose its backlog): that one is left as it is.

        ``push_endpoint(service, path)`` gives the URL a push subscription posts to;
        ``push_identity`` the one identity every push subscription signs with (the platform
        passes ``Settings.push_identity``; by default, the project's as ``Settings`` names it).
        """
        if push_identity is None:
            push_identity = Settings(project=self.project).push_identity
        for name, topic in catalog.topics.items():
            self.create_topic(name, topic.message_retention, exist_ok=True)
        for name, spec in catalog.subscriptions.items():
            delivery = spec.delivery
            config = SubscriptionConfig(
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
                push_endpoint=push_endpoint(delivery.service, delivery.path)
                if isinstance(delivery, PushDelivery)
                else None,
                push_service_account=push_identity if isinstance(delivery, PushDelivery) else None,
                bigquery_table=delivery.table if isinstance(delivery, BigQueryDelivery) else None,
                bigquery_write_metadata=isinstance(delivery, BigQueryDelivery)
                and delivery.write_metadata,
            )
            current = self.create_subscription(config, exist_ok=True)
            wanted = config.validated()
            if current != wanted and (current.topic, current.filter) == (
                wanted.topic,
                wanted.filter,
            ):
                self.update_subscription(wanted)

    # Messages -------------------------------------------------------------------------------

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        ids = publish(self.store, self.topology, self.clock, topic, messages)
        with self._published:
            self._generation += 1
            self._published.notify_all()
        return ids

    def pull(self, subscription: str, max_messages: int = 100) -> list[ReceivedMessage]:
        self._maybe_purge()
        return self._delivery.pull(subscription, max_messages)

    def acknowledge(self, subscription: str, ack_ids: Iterable[str]) -> None:
        self._delivery.acknowledge(subscription, ack_ids)

    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int) -> None:
        self._delivery.modify_ack_deadline(subscription, ack_ids, seconds)
        if seconds == 0:
            self._wake()

    def seek(self, subscription: str, to: datetime | str) -> None:
        if isinstance(to, str):
            self._replay.seek_to_snapshot(subscription, to)
        else:
            self._replay.seek_to_time(subscription, to)
        self._wake()

    def create_snapshot(self, snapshot: str, subscription: str) -> SnapshotInfo:
        return self._replay.create_snapshot(snapshot, subscription)

    def delete_snapshot(self, snapshot: str) -> None:
        self._replay.delete_snapshot(snapshot)

    def list_snapshots(self) -> list[SnapshotInfo]:
        return self._replay.snapshots()

    def purge_expired(self) -> int:
        return self._replay.purge_expired()

    def metrics(self, subscription: str) -> SubscriptionMetrics:
        return self._metrics.of(subscription)

    # Waiting --------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Counts the publishes, nacks and seeks of this process (see ``wait``)."""
        return self._generation

    def wait(self, timeout: float, poll: float = 0.005) -> None:
        """Sleep up to ``timeout`` seconds, returning early when a publish, nack or seek in this
        process, or any commit by another connection, may have made messages deliverable."""
        deadline = time.monotonic() + timeout
        version = self.store.data_version()
        with self._published:
            generation = self._generation
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with self._published:
                if self._generation != generation:
                    return
                self._published.wait(min(poll, left))
                if self._generation != generation:
                    return
            if self.store.data_version() != version:
                return

    def _wake(self) -> None:
        with self._published:
            self._generation += 1
            self._published.notify_all()

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            self._replay.purge_expired()

    def close(self) -> None:
        self.store.close()
