"""At-least-once delivery: lease, acknowledge, modify deadlines, nack, dead-letter.

Every backlog row carries its delivery count (``attempts``). A lease sets ``leased_until`` and
moves ``due`` to the lease end plus the retry backoff, so an expired lease becomes deliverable
again after the same backoff a nack would give (reference §2.2: both count as failures). A row
that falls due after ``max_delivery_attempts`` deliveries is forwarded to the dead-letter topic
instead of being delivered again.

Ack ids are ``<subscription id>.<message id>.<attempt>``: a deadline change from an earlier
attempt's ack id is ignored, so a slow consumer cannot move a lease another consumer holds.
An ack from any attempt is accepted: the message was processed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from meridian.domain.errors import ValidationError
from meridian.embedded.pubsub.publishing import insert_batch
from meridian.embedded.pubsub.store import Store
from meridian.embedded.pubsub.topology import Sub, Topology
from meridian.ports import Message, ReceivedMessage

DEAD_LETTER_ATTRIBUTES = (
    "CloudPubSubDeadLetterSourceDeliveryCount",
    "CloudPubSubDeadLetterSourceSubscription",
    "CloudPubSubDeadLetterSourceSubscriptionProject",
    "CloudPubSubDeadLetterSourceTopicPublishTime",
)

_SELECT = (
    "SELECT b.msg_id, b.attempts, m.publish_time, m.data, m.attributes, m.ordering_key"
    " FROM backlog b JOIN messages m ON m.id = b.msg_id"
)


# (msg_id, attempts, publish_time, data, attributes JSON, ordering key), as _SELECT reads it.
_RowTuple = tuple[int, int, float, bytes, str | None, str | None]
# SQLite's default limit on host parameters is 32,766; stay far below it.
_IN_LIST_MAX = 500
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _attributes(text: str | None) -> dict[str, str]:
    """The stored attributes JSON (always a flat object the publisher wrote with json.dumps).

    ``json.loads`` spends two thirds of its time on a 150-byte object in whitespace checks
    and wrappers; the scanner alone reads it in a third of the time, and a trailing byte
    (impossible from our writer) still fails loudly."""
    if not text:
        return {}
    value, end = _scan_json(text, 0)
    if end != len(text):
        raise ValueError(f"attributes JSON has {len(text) - end} trailing characters")
    attributes: dict[str, str] = value
    return attributes


def _received(sub_id: int, rows: list[_RowTuple], dead_lettering: bool) -> list[ReceivedMessage]:
    """The leased rows as delivered messages (their delivery count already incremented).

    Built with as little per-message work as possible (the live map takes 5,000 a second):
    the messages of one publish share a publish time, so its datetime is made once."""
    times: dict[float, datetime] = {}
    received = []
    for msg_id, attempts, publish_time, data, attributes, ordering_key in rows:
        published = times.get(publish_time)
        if published is None:
            published = times[publish_time] = datetime.fromtimestamp(publish_time, UTC)
        attempt = attempts + 1
        # Positional: binding five keywords cost a third more than building the message.
        received.append(
            ReceivedMessage(
                f"{sub_id}.{msg_id}.{attempt}",  # ack id
                str(msg_id),  # message id
                Message(data, _attributes(attributes), ordering_key or ""),
                published,  # publish time
                attempt if dead_lettering else 0,  # delivery attempt
            )
        )
    return received


@dataclass(frozen=True)
class _Row:
    msg_id: int
    attempts: int
    publish_time: float
    data: bytes
    attributes: str | None
    ordering_key: str | None

    def message(self) -> Message:
        attributes = json.loads(self.attributes) if self.attributes else {}
        return Message(self.data, attributes, self.ordering_key or "")


def rfc3339(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_ack_id(sub: Sub, ack_id: str) -> tuple[int, int]:
    """(message id, attempt) of an ack id of ``sub``; ValidationError if it is not one."""
    try:
        sub_id, msg_id, attempt = map(int, ack_id.split("."))
    except ValueError:
        raise ValidationError(f"invalid ack id {ack_id!r}") from None
    if sub_id != sub.id:
        raise ValidationError(f"ack id {ack_id!r} does not belong to subscription {sub.name}")
    return msg_id, attempt


class Delivery:
    def __init__(
        self, store: Store, topology: Topology, clock: Callable[[], float], project: str
    ) -> None:
        self._store = store
        self._topology = topology
        self._clock = clock
        self._project = project

    def pull(self, subscription: str, max_messages: int) -> list[ReceivedMessage]:
        """Lease up to ``max_messages`` deliverable messages (never blocks)."""
        if max_messages <= 0:
            raise ValidationError("max_messages must be positive")
        with self._store.write() as db:
            sub = self._topology.subscription(subscription, db)
            now = self._clock()
            rows = self._candidates(db, sub, now, max_messages)
            config = sub.config
            dead_lettering = config.dead_letter_topic is not None
            if dead_lettering:
                limit = config.max_delivery_attempts
                poison = [_Row(*r) for r in rows if r[1] >= limit]
                if poison:
                    self._dead_letter(db, sub, poison, now)
                    rows = [r for r in rows if r[1] < limit]
            if not rows:
                return []
            lease_end = now + config.ack_deadline_s
            # Rows are leased one statement per delivery count (nearly always one: first
            # deliveries), each naming its messages in an IN list, rather than one UPDATE per
            # row: the same rows change, in a third of the statement overhead.
            by_attempts: dict[int, list[int]] = {}
            for r in rows:
                by_attempts.setdefault(r[1], []).append(r[0])
            for attempts, ids in by_attempts.items():
                for start in range(0, len(ids), _IN_LIST_MAX):
                    chunk = ids[start : start + _IN_LIST_MAX]
                    db.execute(
                        "UPDATE backlog SET attempts = ?, leased_until = ?, due = ?"
                        f" WHERE sub_id = ? AND msg_id IN ({','.join('?' * len(chunk))})",
                        (
                            attempts + 1,
                            lease_end,
                            lease_end + config.backoff(attempts + 1),
                            sub.id,
                            *chunk,
                        ),
                    )
            db.execute(
                "UPDATE subscriptions SET delivered = delivered + ? WHERE id = ?",
                (len(rows), sub.id),
            )
        return _received(sub.id, rows, dead_lettering)

    def _candidates(
        self, db: sqlite3.Connection, sub: Sub, now: float, limit: int
    ) -> list[_RowTuple]:
        if not sub.config.ordering:
            return db.execute(
                f"{_SELECT} WHERE b.sub_id = ? AND b.due <= ? ORDER BY b.due, b.msg_id LIMIT ?",
                (sub.id, now, limit),
            ).fetchall()
        # Ordered: a key's messages go out in id order, and none after the key's first message
        # that is not deliverable yet (leased, or nacked and backing off): that is how a nack
        # holds back the rest of its key (reference §2.4).
        blocked_from = dict(
            db.execute(
                "SELECT ordering_key, min(msg_id) FROM backlog WHERE sub_id = ? AND due > ?"
                " AND ordering_key IS NOT NULL GROUP BY ordering_key",
                (sub.id, now),
            ).fetchall()
        )
        rows: list[_RowTuple] = []
        cursor = db.execute(
            "SELECT b.msg_id, b.attempts, m.publish_time, m.data, m.attributes, m.ordering_key,"
            " b.ordering_key FROM backlog b JOIN messages m ON m.id = b.msg_id"
            " WHERE b.sub_id = ? AND b.due <= ? ORDER BY b.msg_id",
            (sub.id, now),
        )
        for *fields, key in cursor:
            if key is None or fields[0] < blocked_from.get(key, fields[0] + 1):
                rows.append(tuple(fields))
                if len(rows) == limit:
                    break
        return rows

    def acknowledge(self, subscription: str, ack_ids: Iterable[str]) -> None:
        ack_ids = list(ack_ids)
        if not ack_ids:
            return
        with self._store.write() as db:
            sub = self._topology.subscription(subscription, db)
            ids = [parse_ack_id(sub, a)[0] for a in ack_ids]
            before = db.total_changes
            # IN lists, as for leases: the live map acks thousands a second in large batches.
            for start in range(0, len(ids), _IN_LIST_MAX):
                chunk = ids[start : start + _IN_LIST_MAX]
                db.execute(
                    "DELETE FROM backlog WHERE sub_id = ?"
                    f" AND msg_id IN ({','.join('?' * len(chunk))})",
                    (sub.id, *chunk),
                )
            acked = db.total_changes - before
            if acked:
                db.execute(
                    "UPDATE subscriptions SET acked = acked + ? WHERE id = ?", (acked, sub.id)
                )

    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int) -> None:
        if not 0 <= seconds <= 600:
            raise ValidationError(f"ack deadline must be 0-600 seconds, not {seconds}")
        ack_ids = list(ack_ids)
        if not ack_ids:
            return
        with self._store.write() as db:
            sub = self._topology.subscription(subscription, db)
            leases = [parse_ack_id(sub, a) for a in ack_ids]
            now = self._clock()
            if seconds > 0:
                self._extend(db, sub, leases, now, seconds)
            else:
                self._nack(db, sub, leases, now)

    def _extend(
        self,
        db: sqlite3.Connection,
        sub: Sub,
        leases: list[tuple[int, int]],
        now: float,
        seconds: int,
    ) -> None:
        db.executemany(
            "UPDATE backlog SET leased_until = ?, due = ? WHERE sub_id = ? AND msg_id = ?"
            " AND attempts = ? AND leased_until IS NOT NULL",
            [
                (now + seconds, now + seconds + sub.config.backoff(attempt), sub.id, msg, attempt)
                for msg, attempt in leases
            ],
        )

    def _nack(
        self, db: sqlite3.Connection, sub: Sub, leases: list[tuple[int, int]], now: float
    ) -> None:
        config = sub.config
        held = [
            _Row(*r)
            for msg, attempt in leases
            for r in db.execute(
                f"{_SELECT} WHERE b.sub_id = ? AND b.msg_id = ? AND b.attempts = ?"
                " AND b.leased_until IS NOT NULL",
                (sub.id, msg, attempt),
            )
        ]
        if config.dead_letter_topic:
            poison = [r for r in held if r.attempts >= config.max_delivery_attempts]
            if poison:
                self._dead_letter(db, sub, poison, now)
                held = [r for r in held if r.attempts < config.max_delivery_attempts]
        for r in held:
            due = now + config.backoff(r.attempts)
            db.execute(
                "UPDATE backlog SET leased_until = NULL, due = ? WHERE sub_id = ? AND msg_id = ?",
                (due, sub.id, r.msg_id),
            )
            if config.ordering and r.ordering_key:
                # Later messages of the key already handed out go back behind the nacked one.
                db.execute(
                    "UPDATE backlog SET leased_until = NULL, due = ?"
                    " WHERE sub_id = ? AND ordering_key = ? AND msg_id > ?"
                    " AND leased_until IS NOT NULL",
                    (due, sub.id, r.ordering_key, r.msg_id),
                )

    def _dead_letter(self, db: sqlite3.Connection, sub: Sub, rows: list[_Row], now: float) -> None:
        """Forward ``rows`` to the dead-letter topic with Google's attributes, in this
        transaction, and drop them from the subscription."""
        assert sub.config.dead_letter_topic is not None
        dlq = self._topology.topic(sub.config.dead_letter_topic, db)
        copies = []
        for r in rows:
            original = r.message()
            attributes = {
                **original.attributes,
                "CloudPubSubDeadLetterSourceDeliveryCount": str(r.attempts),
                "CloudPubSubDeadLetterSourceSubscription": sub.name,
                "CloudPubSubDeadLetterSourceSubscriptionProject": self._project,
                "CloudPubSubDeadLetterSourceTopicPublishTime": rfc3339(r.publish_time),
            }
            copies.append(Message(original.data, attributes, original.ordering_key))
        insert_batch(db, self._topology, dlq.id, copies, now)
        db.executemany(
            "DELETE FROM backlog WHERE sub_id = ? AND msg_id = ?",
            [(sub.id, r.msg_id) for r in rows],
        )
        db.execute(
            "UPDATE subscriptions SET dead_lettered = dead_lettered + ? WHERE id = ?",
            (len(rows), sub.id),
        )
