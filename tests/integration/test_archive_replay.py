"""Archive replay on the real embedded adapters: business events published to the broker,
archived by the BigQuery-subscription sink into the DuckDB warehouse (the catalog's
events-archive), then republished from it within a window, filtered, each event once, with its
event id, attributes and ordering key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meridian.app.archive import (
    archive_table,
    archived_count,
    ordering_key_of,
    replay_archive,
)
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.domain.errors import CatalogError, NotFound
from meridian.embedded.pubsub.bigquery import BigQuerySink, to_row
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.filters import parse_filter
from meridian.ports import ReceivedMessage

DAY = datetime(2026, 11, 20, tzinfo=UTC)
TOPIC = "logistics.events"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, when: datetime) -> None:
        self.now = when.timestamp()


def _delivered(n: int, at: datetime) -> ev.ParcelDelivered:
    return ev.ParcelDelivered(
        event_id=f"evt-d{n}", occurred_at=at, parcel_id=f"p-{n}", shipment_id="s-1",
        client_id="c-1", driver_id="drv-1", vehicle_id="veh-1", delivered_at=at, lat=1, lng=1,
        window_end=at, recipient_phone="+919800000001",
    )  # fmt: skip


def _failed(n: int, at: datetime) -> ev.DeliveryFailed:
    return ev.DeliveryFailed(
        event_id=f"evt-f{n}", occurred_at=at, parcel_id=f"p-{n}", shipment_id="s-1",
        client_id="c-1", driver_id="drv-1", vehicle_id="veh-1", reason="no_one_home",
        failed_at=at, attempt=1, recipient_phone="+919800000001",
    )  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> tuple[Broker, EmbeddedWarehouse, Clock, EventCodec]:
    """The catalog's topic and archive subscription, plus an audit subscription that sees what
    a replay republishes."""
    catalog = load_catalog()
    clock = Clock(DAY)
    broker = Broker(tmp_path, clock=clock)
    broker.create_topic(TOPIC)
    spec = catalog.subscriptions["events-archive"]
    broker.create_subscription(
        SubscriptionConfig(
            "events-archive",
            TOPIC,
            bigquery_table=archive_table(catalog, TOPIC),
            bigquery_write_metadata=True,
            ack_deadline_s=spec.ack_deadline_seconds,
        )
    )
    broker.create_subscription(SubscriptionConfig("audit", TOPIC, ordering=True))
    return broker, EmbeddedWarehouse(tmp_path), clock, EventCodec(catalog)


def _drain(broker: Broker) -> list[ReceivedMessage]:
    got = broker.pull("audit", 1000)
    broker.acknowledge("audit", [m.ack_id for m in got])
    return got


def test_a_window_is_republished_once_per_event_id_with_its_attributes_filtered(
    world: tuple[Broker, EmbeddedWarehouse, Clock, EventCodec],
) -> None:
    broker, warehouse, clock, codec = world
    catalog = load_catalog()
    table = archive_table(catalog, TOPIC)
    sink = BigQuerySink(broker, warehouse)
    # Yesterday evening, around midnight and this morning: the window crosses a partition.
    times = [DAY - timedelta(hours=2), DAY + timedelta(hours=8), DAY + timedelta(hours=9)]
    for n, at in enumerate(times):
        clock.at(at)
        broker.publish(
            TOPIC, [codec.to_message(_delivered(n, at)), codec.to_message(_failed(n, at))]
        )
    assert sink.drain_once() == 6
    original = {m.message.attributes["eventId"]: m for m in _drain(broker)}
    # The sink wrote one batch twice (at-least-once): its rows are in the archive twice.
    clock.at(times[2])
    broker.publish(TOPIC, [codec.to_message(_delivered(9, times[2]))])
    rows = broker.pull("events-archive", 10)
    config = broker.get_subscription("events-archive")
    warehouse.append_rows(table, [to_row(m, config) for m in rows] * 2)
    broker.acknowledge("events-archive", [m.ack_id for m in rows])
    _drain(broker)

    start, end = DAY - timedelta(hours=3), DAY + timedelta(hours=9)  # the last one's hour excluded
    assert archived_count(warehouse, table, start, end) == 4
    reads: list[int] = []
    done = replay_archive(
        warehouse,
        broker,
        table,
        TOPIC,
        start,
        end,
        ordering_key_of(codec, catalog),
        parse_filter('attributes.eventType = "ParcelDelivered"'),
        batch_size=1,
        progress=reads.append,
    )
    assert (done.read, done.republished, done.filtered, done.duplicates) == (4, 2, 2, 0)
    assert reads[-1] == 4 and reads == sorted(reads)
    replayed = _drain(broker)
    assert [m.message.attributes["eventId"] for m in replayed] == ["evt-d0", "evt-d1"]
    for m in replayed:
        first = original[m.message.attributes["eventId"]]
        assert m.message.attributes == first.message.attributes
        assert m.message.data == first.message.data
        assert (
            m.message.ordering_key
            == first.message.ordering_key
            == first.message.attributes["subject"]
        )
        assert m.message_id != first.message_id  # a new message, the same event

    # The whole day again: the duplicated rows and the replayed events are each replayed once
    # (evt-d0, of yesterday, is in today's partition too: its replay was published today).
    sink.drain_once()  # the replay's own messages are archived too
    whole = replay_archive(
        warehouse,
        broker,
        table,
        TOPIC,
        DAY,
        DAY + timedelta(days=1),
        ordering_key_of(codec, catalog),
    )
    ids = [m.message.attributes["eventId"] for m in _drain(broker)]
    assert sorted(ids) == ["evt-d0", "evt-d1", "evt-d2", "evt-d9", "evt-f1", "evt-f2"]
    assert whole.republished == 6 and whole.duplicates == whole.read - 6 > 0


def test_an_ordering_key_that_is_not_the_subject_is_read_from_the_event(
    world: tuple[Broker, EmbeddedWarehouse, Clock, EventCodec],
) -> None:
    codec = world[3]
    catalog = load_catalog()
    offered = ev.DriverAssignmentOffered(
        event_id="evt-o1", occurred_at=DAY, window_id="w-1", assignment_id="a-1",
        route_id="r-1", driver_id="drv-1", vehicle_id="veh-1",
        expires_at=DAY + timedelta(minutes=5), offer_number=1,
    )  # fmt: skip
    message = codec.to_message(offered)
    assert message.ordering_key == "w-1" != message.attributes["subject"]
    assert ordering_key_of(codec, catalog)(message) == "w-1"


def test_nothing_archived_is_not_found_and_a_topic_without_archive_is_refused(
    world: tuple[Broker, EmbeddedWarehouse, Clock, EventCodec],
) -> None:
    broker, warehouse, _, codec = world
    catalog = load_catalog()
    with pytest.raises(NotFound):
        replay_archive(
            warehouse, broker, "events.business_events", TOPIC, DAY, DAY + timedelta(hours=1),
            ordering_key_of(codec, catalog),
        )  # fmt: skip
    with pytest.raises(CatalogError, match=r"eta\.dlq"):
        archive_table(catalog, "eta.dlq")
