"""Archive replay: republish a window of archived events from the warehouse to their topic.

Every business event on ``logistics.events`` is also written to the warehouse by a BigQuery
subscription (the catalog's ``events-archive``: ``data`` plus Pub/Sub's metadata columns
``message_id``, ``publish_time`` and ``attributes``), as the raw pings are. Pub/Sub keeps a topic's
messages for its retention only (seven days), so a window older than that can only be replayed
from there. ``replay_archive`` reads it one UTC day at a time (the table's partition, so each query
scans only the days it needs) and republishes in batches through the Publisher port, each message
with its archived attributes (its ``eventId`` above all, so every consumer that has seen it
deduplicates) and its event type's ordering key, which the archive does not keep.

An event appears in the archive more than once when the sink wrote it twice (delivery is
at-least-once) or when an earlier replay republished it; it is replayed once, by event id.
``meridian replay archive`` runs it; it needs only the ports and the catalog.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from meridian.catalog import BigQueryDelivery, Catalog
from meridian.codec.events import EventCodec
from meridian.domain.errors import CatalogError
from meridian.filters import Filter
from meridian.ports import Message, Publisher, Warehouse

# Well under Pub/Sub's 1,000 messages and 10 MB per publish for events of a few hundred bytes.
BATCH_SIZE = 500

_WINDOW = "WHERE publish_time >= $start AND publish_time < $end"


def archive_table(catalog: Catalog, topic: str) -> str:
    """The warehouse table that archives ``topic``: its BigQuery subscription's, written with
    Pub/Sub's metadata (without it, no event ids to replay by). Raises CatalogError if none."""
    for name in catalog.subscriptions_of(topic):
        delivery = catalog.subscriptions[name].delivery
        if isinstance(delivery, BigQueryDelivery) and delivery.write_metadata:
            return delivery.table
    raise CatalogError(f"topic {topic!r} has no BigQuery subscription with write_metadata")


def ordering_key_of(codec: EventCodec, catalog: Catalog) -> Callable[[Message], str]:
    """The ordering key an event was published with, from its archived message: the event
    type's ordering-key field, read from the ``subject`` attribute when it is the subject and
    from the decoded event otherwise (a driver assignment is ordered by its window)."""

    def key(message: Message) -> str:
        spec = catalog.event_types.get(message.attributes.get("eventType", ""))
        if spec is None or not spec.ordering_key:
            return ""
        if spec.ordering_key == spec.subject:
            return message.attributes.get("subject", "")
        event = codec.from_message(message.data, message.attributes)
        return str(getattr(event, spec.ordering_key))

    return key


@dataclass(frozen=True)
class ArchiveReplay:
    """What a replay did: rows ``read`` in the window, events ``republished``, and those left
    out as ``duplicates`` (an event id already replayed) or ``filtered`` out."""

    read: int
    republished: int
    duplicates: int
    filtered: int


def archived_count(warehouse: Warehouse, table: str, start: datetime, end: datetime) -> int:
    """How many rows the archive holds in ``[start, end)`` (duplicates included)."""
    total = 0
    for lo, hi in _days(start, end):
        (row,) = warehouse.query(
            f"SELECT COUNT(*) AS n FROM {table} {_WINDOW}", {"start": lo, "end": hi}
        )
        total += int(row["n"])
    return total


def replay_archive(
    warehouse: Warehouse,
    publisher: Publisher,
    table: str,
    topic: str,
    start: datetime,
    end: datetime,
    ordering_key: Callable[[Message], str],
    condition: Filter | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ArchiveReplay:
    """Republish to ``topic`` every event archived in ``table`` with a publish time in
    ``[start, end)`` whose attributes match ``condition`` (all without one), oldest first, each
    once. Calls ``progress`` with the rows read so far after each batch. Raises NotFound when
    the table does not exist (nothing was ever archived)."""
    read = republished = duplicates = filtered = 0
    seen: set[str] = set()
    batch: list[Message] = []

    def flush() -> None:
        nonlocal republished
        if batch:
            publisher.publish(topic, batch)
            republished += len(batch)
            batch.clear()
        if progress is not None:
            progress(read)

    for message_id, message in _archived(warehouse, table, start, end):
        read += 1
        event_id = message.attributes.get("eventId", message_id)
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        if condition is not None and not condition.matches(message.attributes):
            filtered += 1
            continue
        batch.append(Message(message.data, message.attributes, ordering_key(message)))
        if len(batch) >= batch_size:
            flush()
    flush()
    return ArchiveReplay(read, republished, duplicates, filtered)


def _archived(
    warehouse: Warehouse, table: str, start: datetime, end: datetime
) -> Iterator[tuple[str, Message]]:
    for lo, hi in _days(start, end):
        rows = warehouse.query(
            f"SELECT message_id, attributes, data FROM {table} {_WINDOW}"
            " ORDER BY publish_time, message_id",
            {"start": lo, "end": hi},
        )
        for row in rows:
            attributes = json.loads(row["attributes"]) if row["attributes"] else {}
            yield row["message_id"], Message(bytes(row["data"]), attributes)


def _days(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """``[start, end)`` cut at UTC midnights: one query per partition."""
    lo = start.astimezone(UTC)
    end = end.astimezone(UTC)
    while lo < end:
        midnight = datetime.combine(lo.date() + timedelta(days=1), time(), UTC)
        hi = min(midnight, end)
        yield lo, hi
        lo = hi
