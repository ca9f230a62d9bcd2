"""Topics, subscriptions and snapshots: create, get, list, delete, with a per-process cache.

The cache is reloaded whenever ``meta.topology_version`` changes, so a subscription created by
another process (the gRPC front end, the platform) is seen at the next publish or pull.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from meridian.domain.errors import AlreadyExists, NotFound, ValidationError
from meridian.embedded.pubsub.config import (
    MAX_RETENTION_S,
    MIN_RETENTION_S,
    SubscriptionConfig,
    TopicConfig,
)
from meridian.embedded.pubsub.store import Store
from meridian.filters import Filter, parse_filter


@dataclass(frozen=True)
class Sub:
    id: int
    topic_id: int
    config: SubscriptionConfig
    created: float

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def filter(self) -> Filter:
        return _filter(self.config.filter)


@dataclass(frozen=True)
class Topic:
    id: int
    config: TopicConfig
    created: float

    @property
    def name(self) -> str:
        return self.config.name


@lru_cache(maxsize=512)
def _filter(text: str) -> Filter:
    return parse_filter(text)


class Topology:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._version = -1
        self._topics: dict[str, Topic] = {}
        self._topics_by_id: dict[int, Topic] = {}
        self._subs: dict[str, Sub] = {}
        self._subs_by_id: dict[int, Sub] = {}
        self._subs_of: dict[int, list[Sub]] = {}

    # Reading --------------------------------------------------------------------------------

    def refresh(self, db: sqlite3.Connection | None = None) -> None:
        db = db or self._store.connection()
        (version,) = db.execute("SELECT value FROM meta WHERE key = 'topology_version'").fetchone()
        if version == self._version:
            return
        topics = [
            Topic(id_, TopicConfig(name, retention), created)
            for id_, name, retention, created in db.execute(
                "SELECT id, name, retention_s, created FROM topics"
            )
        ]
        subs = [
            Sub(id_, topic_id, SubscriptionConfig.from_json(config), created)
            for id_, topic_id, config, created in db.execute(
                "SELECT id, topic_id, config, created FROM subscriptions"
            )
        ]
        self._topics = {t.name: t for t in topics}
        self._topics_by_id = {t.id: t for t in topics}
        self._subs = {s.name: s for s in subs}
        self._subs_by_id = {s.id: s for s in subs}
        self._subs_of = {t.id: [s for s in subs if s.topic_id == t.id] for t in topics}
        self._version = version

    def topic(self, name: str, db: sqlite3.Connection | None = None) -> Topic:
        self.refresh(db)
        try:
            return self._topics[name]
        except KeyError:
            raise NotFound(f"topic {name} not found") from None

    def topic_by_id(self, topic_id: int) -> Topic:
        return self._topics_by_id[topic_id]

    def subscription(self, name: str, db: sqlite3.Connection | None = None) -> Sub:
        self.refresh(db)
        try:
            return self._subs[name]
        except KeyError:
            raise NotFound(f"subscription {name} not found") from None

    def subscriptions_of(self, topic_id: int) -> list[Sub]:
        return self._subs_of.get(topic_id, [])

    def topics(self) -> list[TopicConfig]:
        self.refresh()
        return sorted((t.config for t in self._topics.values()), key=lambda t: t.name)

    def subscriptions(self, topic: str | None = None) -> list[SubscriptionConfig]:
        self.refresh()
        subs = [s.config for s in self._subs.values() if topic is None or s.config.topic == topic]
        return sorted(subs, key=lambda s: s.name)

    # Writing --------------------------------------------------------------------------------

    def create_topic(self, config: TopicConfig, exist_ok: bool = False) -> TopicConfig:
        if not MIN_RETENTION_S <= config.message_retention_s <= MAX_RETENTION_S:
            raise ValidationError("message_retention_duration must be 10 minutes to 31 days")
        with self._store.write() as db:
            try:
                db.execute(
                    "INSERT INTO topics (name, retention_s, created) VALUES (?, ?, ?)",
                    (config.name, config.message_retention_s, self._clock()),
                )
            except sqlite3.IntegrityError:
                if exist_ok:
                    return self.topic(config.name, db).config
                raise AlreadyExists(f"topic {config.name} already exists") from None
            _bump(db)
        return config

    def delete_topic(self, name: str) -> None:
        with self._store.write() as db:
            topic = self.topic(name, db)
            # Like Pub/Sub, the topic's subscriptions survive (detached from a deleted topic);
            # here they simply stop receiving, and their backlog stays pullable.
            db.execute("DELETE FROM topics WHERE id = ?", (topic.id,))
            _bump(db)

    def create_subscription(
        self, config: SubscriptionConfig, exist_ok: bool = False
    ) -> SubscriptionConfig:
        config = config.validated()
        with self._store.write() as db:
            topic = self.topic(config.topic, db)
            if config.dead_letter_topic:
                self.topic(config.dead_letter_topic, db)  # must exist (reference §2.3)
            try:
                db.execute(
                    "INSERT INTO subscriptions (name, topic_id, config, created)"
                    " VALUES (?, ?, ?, ?)",
                    (config.name, topic.id, config.to_json(), self._clock()),
                )
            except sqlite3.IntegrityError:
                if exist_ok:
                    return self.subscription(config.name, db).config
                raise AlreadyExists(f"subscription {config.name} already exists") from None
            _bump(db)
        return config

    def update_subscription(self, config: SubscriptionConfig) -> SubscriptionConfig:
        config = config.validated()
        with self._store.write() as db:
            current = self.subscription(config.name, db)
            if config.filter != current.config.filter:
                raise ValidationError("a subscription's filter cannot be changed")
            if config.topic != current.config.topic:
                raise ValidationError("a subscription's topic cannot be changed")
            if config.dead_letter_topic:
                self.topic(config.dead_letter_topic, db)
            db.execute(
                "UPDATE subscriptions SET config = ? WHERE id = ?",
                (config.to_json(), current.id),
            )
            _bump(db)
        return config

    def delete_subscription(self, name: str) -> None:
        with self._store.write() as db:
            sub = self.subscription(name, db)
            db.execute("DELETE FROM subscriptions WHERE id = ?", (sub.id,))
            db.execute("DELETE FROM backlog WHERE sub_id = ?", (sub.id,))
            _bump(db)


def _bump(db: sqlite3.Connection) -> None:
    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'topology_version'")
