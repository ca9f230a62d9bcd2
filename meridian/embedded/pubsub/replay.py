"""Retention, seek and snapshots (reference §2.6-2.7).

Messages are kept for their topic's retention, so seek can rebuild a subscription's backlog from
them: seek to a time makes everything published from then on unacknowledged again (through the
subscription's filter) and everything earlier acknowledged; seek to a snapshot restores the
backlog the snapshot recorded plus everything published after it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from meridian.domain.errors import AlreadyExists, NotFound, ValidationError
from meridian.embedded.pubsub.store import Store
from meridian.embedded.pubsub.topology import Sub, Topology

SNAPSHOT_LIFETIME_S = 7 * 86400


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    subscription: str
    topic: str
    expire_time: float


class Replay:
    def __init__(self, store: Store, topology: Topology, clock: Callable[[], float]) -> None:
        self._store = store
        self._topology = topology
        self._clock = clock

    def seek_to_time(self, subscription: str, when: datetime | float) -> None:
        at = when.timestamp() if isinstance(when, datetime) else when
        with self._store.write() as db:
            sub = self._topology.subscription(subscription, db)
            oldest = self._clock() - sub.config.message_retention_s
            rows = db.execute(
                "SELECT id, attributes, ordering_key FROM messages"
                " WHERE topic_id = ? AND publish_time >= ? ORDER BY id",
                (sub.topic_id, max(at, oldest)),
            )
            self._reset(db, sub, rows)

    def create_snapshot(self, name: str, subscription: str) -> SnapshotInfo:
        with self._store.write() as db:
            sub = self._topology.subscription(subscription, db)
            now = self._clock()
            if db.execute("SELECT 1 FROM snapshots WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"snapshot {name} already exists")
            (high_water,) = db.execute(
                "SELECT value - 1 FROM meta WHERE key = 'next_message_id'"
            ).fetchone()
            (oldest,) = db.execute(
                "SELECT min(m.publish_time) FROM backlog b JOIN messages m ON m.id = b.msg_id"
                " WHERE b.sub_id = ?",
                (sub.id,),
            ).fetchone()
            # Lifetime is 7 days minus the age of the oldest unacked message (reference §2.7).
            expire = (oldest if oldest is not None else now) + SNAPSHOT_LIFETIME_S
            if expire - now < 3600:
                raise ValidationError(
                    f"snapshot {name} would expire in under an hour (FAILED_PRECONDITION)"
                )
            db.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
                (name, sub.id, sub.topic_id, high_water, now, expire),
            )
            db.execute(
                "INSERT INTO snapshot_members SELECT ?, msg_id FROM backlog WHERE sub_id = ?",
                (name, sub.id),
            )
            return SnapshotInfo(name, sub.name, sub.config.topic, expire)

    def seek_to_snapshot(self, subscription: str, snapshot: str) -> None:
        with self._store.write() as db:
            sub = self._topology.subscription(subscription, db)
            found = db.execute(
                "SELECT topic_id, high_water FROM snapshots WHERE name = ? AND expire > ?",
                (snapshot, self._clock()),
            ).fetchone()
            if found is None:
                raise NotFound(f"snapshot {snapshot} not found")
            topic_id, high_water = found
            if topic_id != sub.topic_id:
                raise ValidationError(
                    f"snapshot {snapshot} is of another topic than subscription {sub.name}"
                )
            rows = db.execute(
                "SELECT id, attributes, ordering_key FROM messages WHERE id IN"
                " (SELECT msg_id FROM snapshot_members WHERE snapshot = ?)"
                " UNION ALL SELECT id, attributes, ordering_key FROM messages"
                " WHERE topic_id = ? AND id > ? ORDER BY id",
                (snapshot, topic_id, high_water),
            )
            self._reset(db, sub, rows)

    def delete_snapshot(self, name: str) -> None:
        with self._store.write() as db:
            if not db.execute("DELETE FROM snapshots WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"snapshot {name} not found")
            db.execute("DELETE FROM snapshot_members WHERE snapshot = ?", (name,))

    def snapshots(self) -> list[SnapshotInfo]:
        self._topology.refresh()
        rows = self._store.connection().execute(
            "SELECT s.name, sub.name, t.name, s.expire FROM snapshots s"
            " JOIN subscriptions sub ON sub.id = s.sub_id JOIN topics t ON t.id = s.topic_id"
            " WHERE s.expire > ? ORDER BY s.name",
            (self._clock(),),
        )
        return [SnapshotInfo(*r) for r in rows]

    def _reset(
        self, db: sqlite3.Connection, sub: Sub, rows: Iterable[tuple[int, str | None, str | None]]
    ) -> None:
        now = self._clock()
        condition = sub.filter.condition
        ordered = sub.config.ordering
        backlog = [
            (sub.id, msg_id, now, key if ordered else None)
            for msg_id, attributes, key in rows
            if condition is None or condition.matches(json.loads(attributes) if attributes else {})
        ]
        db.execute("DELETE FROM backlog WHERE sub_id = ?", (sub.id,))
        db.executemany(
            "INSERT INTO backlog (sub_id, msg_id, due, ordering_key) VALUES (?, ?, ?, ?)", backlog
        )

    def purge_expired(self) -> int:
        """Drop messages past retention and expired snapshots; returns messages dropped."""
        now = self._clock()
        dropped = 0
        with self._store.write() as db:
            self._topology.refresh(db)
            for topic in self._topology.topics():
                topic_id = self._topology.topic(topic.name, db).id
                subs = self._topology.subscriptions_of(topic_id)
                for sub in subs:
                    db.execute(
                        "DELETE FROM backlog WHERE sub_id = ? AND msg_id IN (SELECT id FROM"
                        " messages WHERE topic_id = ? AND publish_time < ?)",
                        (sub.id, topic_id, now - sub.config.message_retention_s),
                    )
                keep = max(
                    [topic.message_retention_s, *(s.config.message_retention_s for s in subs)]
                )
                dropped += db.execute(
                    "DELETE FROM messages WHERE topic_id = ? AND publish_time < ?",
                    (topic_id, now - keep),
                ).rowcount
            db.execute(
                "DELETE FROM snapshot_members WHERE snapshot IN"
                " (SELECT name FROM snapshots WHERE expire <= ?)",
                (now,),
            )
            db.execute("DELETE FROM snapshots WHERE expire <= ?", (now,))
        return dropped
