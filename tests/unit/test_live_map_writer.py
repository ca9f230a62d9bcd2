"""The live map's debounced position writer: one write per vehicle per interval, newest by event
time wins, stale pings never move a marker back, and acks follow durable writes. Time is a
counter the tests move, so nothing here waits."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.concurrency.offload import Inline
from meridian.domain.errors import Unavailable
from meridian.domain.events import VehiclePing
from meridian.ports import Message
from services.live_map.pings import PingDecoder
from services.live_map.positions import Debouncer, Position
from services.live_map.writer import PositionWriter, write_positions
from tests.fakes import FakeDocumentStore, FakeSubscriber

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def at(seconds: float, vehicle: str = "veh-1", lat: float = 12.9) -> Position:
    return Position(vehicle, lat, 77.5, T0 + timedelta(seconds=seconds))


# The debounce rule ------------------------------------------------------------------------------


def test_first_ping_of_an_interval_is_due_at_once() -> None:
    debouncer: Debouncer[str] = Debouncer(2.0)
    assert debouncer.offer(at(0), "a", now=100.0) == []
    assert debouncer.take_due(100.0) == [(at(0), "a")]


def test_pings_within_the_interval_give_one_write_at_its_end_with_the_newest() -> None:
    debouncer: Debouncer[str] = Debouncer(2.0)
    debouncer.offer(at(0), "a", now=100.0)
    assert len(debouncer.take_due(100.0)) == 1
    assert debouncer.offer(at(1), "b", now=100.5) == []
    # The newer ping supersedes the pending one, whose message may then be acknowledged.
    assert debouncer.offer(at(2, lat=13.0), "c", now=101.0) == ["b"]
    assert debouncer.take_due(101.9) == []
    assert debouncer.take_due(102.0) == [(at(2, lat=13.0), "c")]
    assert debouncer.take_due(110.0) == []


def test_a_fast_pinging_vehicle_is_written_once_per_interval() -> None:
    debouncer: Debouncer[int] = Debouncer(2.0)
    writes = []
    now = 0.0
    for n in range(200):  # a ping every 0.1 s for 20 s
        now = n * 0.1
        debouncer.offer(at(now), n, now)
        writes += [(now, p) for p, _ in debouncer.take_due(now)]
    times = [t for t, _ in writes]
    assert len(writes) == 10
    assert all(b - a >= 2.0 - 1e-9 for a, b in itertools.pairwise(times))


def test_vehicles_are_debounced_independently() -> None:
    debouncer: Debouncer[str] = Debouncer(2.0)
    debouncer.offer(at(0, "veh-1"), "a", now=0.0)
    debouncer.offer(at(0, "veh-2"), "b", now=0.0)
    assert {p.vehicle_id for p, _ in debouncer.take_due(0.0)} == {"veh-1", "veh-2"}


@pytest.mark.parametrize("stale", [0, -5], ids=["duplicate", "out-of-order"])
def test_a_stale_ping_is_dropped_and_acked_at_once(stale: float) -> None:
    debouncer: Debouncer[str] = Debouncer(2.0)
    debouncer.offer(at(0), "a", now=0.0)
    debouncer.take_due(0.0)
    assert debouncer.offer(at(stale, lat=1.0), "old", now=0.5) == ["old"]
    assert debouncer.take_due(10.0) == []


def test_an_out_of_order_ping_does_not_replace_a_pending_newer_one() -> None:
    debouncer: Debouncer[str] = Debouncer(2.0)
    debouncer.offer(at(0), "a", now=0.0)
    debouncer.take_due(0.0)
    debouncer.offer(at(10), "newest", now=0.5)
    assert debouncer.offer(at(7), "late", now=0.6) == ["late"]
    assert debouncer.take_due(2.0) == [(at(10), "newest")]


def test_a_failed_write_is_retried_unless_something_newer_came() -> None:
    debouncer: Debouncer[str] = Debouncer(2.0)
    debouncer.offer(at(0, "veh-1"), "a", now=0.0)
    debouncer.offer(at(0, "veh-2"), "b", now=0.0)
    taken = debouncer.take_due(0.0)
    debouncer.offer(at(1, "veh-2"), "b2", now=0.1)
    assert debouncer.give_back(taken, retry_at=1.0) == ["b"]
    assert sorted(r for _, r in debouncer.take_due(2.0)) == ["a", "b2"]


# Writes and acks --------------------------------------------------------------------------------


def test_the_stored_position_is_never_replaced_by_an_older_one() -> None:
    store = FakeDocumentStore()
    assert write_positions(store, [at(10, lat=10.0)], T0) == 1
    # A second writer instance, or one restarted with an older message redelivered.
    assert write_positions(store, [at(5, lat=5.0)], T0) == 0
    document = store.get("live_map/veh-1")
    assert document is not None
    assert document.data["lat"] == 10.0
    assert document.data["recorded_at"] == T0 + timedelta(seconds=10)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ping_message(codec: EventCodec, seconds: float, lat: float, vehicle: str = "veh-1") -> Message:
    recorded = T0 + timedelta(seconds=seconds)
    return codec.to_message(
        VehiclePing(
            event_id=f"evt-{vehicle}-{seconds}",
            occurred_at=recorded,
            vehicle_id=vehicle,
            lat=lat,
            lng=77.5,
            heading_deg=90.0,
            speed_mps=8.0,
            recorded_at=recorded,
        )
    )


@pytest.fixture
def codec() -> EventCodec:
    return EventCodec(load_catalog())


def make_writer(
    codec: EventCodec, store: FakeDocumentStore, clock: Clock, inline_io: bool = False
) -> tuple[PositionWriter, FakeSubscriber]:
    subscriber = FakeSubscriber()
    writer = PositionWriter(
        store,
        subscriber,
        PingDecoder(load_catalog()),
        clock=lambda: T0,
        interval_s=2.0,
        monotonic=clock,
        io=Inline() if inline_io else None,
    )
    return writer, subscriber


# Commits and acks in a worker thread (a process with the streams too) or on the loop's thread
# (a process running the writer alone): the same outcome.
INLINE_IO = pytest.mark.parametrize("inline_io", [False, True], ids=["worker-thread", "inline"])


@INLINE_IO
async def test_writer_acks_only_after_the_write_and_keeps_the_newest(
    codec: EventCodec, inline_io: bool
) -> None:
    store, clock = FakeDocumentStore(), Clock()
    writer, subscriber = make_writer(codec, store, clock, inline_io)
    first = subscriber.deliver(ping_message(codec, 0, lat=12.0))
    await writer.consume()
    assert subscriber.acked == []  # consumed, not yet written
    await writer.flush_once()
    assert subscriber.acked == [first]
    assert store.get("live_map/veh-1").data["lat"] == 12.0  # type: ignore[union-attr]

    clock.now = 0.5
    newer = subscriber.deliver(ping_message(codec, 9, lat=12.9))
    late = subscriber.deliver(ping_message(codec, 4, lat=12.4))  # out of order
    duplicate = subscriber.deliver(ping_message(codec, 9, lat=12.9))
    await writer.consume()
    await writer.flush_once()
    # The stale pings are acked at once; the newest waits for the end of the interval.
    assert set(subscriber.acked) == {first, late, duplicate}
    assert store.get("live_map/veh-1").data["lat"] == 12.0  # type: ignore[union-attr]

    clock.now = 2.0
    await writer.flush_once()
    assert newer in subscriber.acked
    document = store.get("live_map/veh-1")
    assert document is not None
    assert document.data["lat"] == 12.9
    assert document.data["heading_deg"] == 90.0
    assert document.data["recorded_at"] == T0 + timedelta(seconds=9)
    assert document.data["written_at"] == T0
    assert writer.stats.written == 2
    assert writer.stats.dropped == 2


@INLINE_IO
async def test_writer_nacks_an_undecodable_message(codec: EventCodec, inline_io: bool) -> None:
    store, clock = FakeDocumentStore(), Clock()
    writer, subscriber = make_writer(codec, store, clock, inline_io)
    bad = subscriber.deliver(Message(b"\x00garbage", {"eventType": "VehiclePing"}))
    await writer.consume()
    await writer.flush_once()
    # Nacked: the subscription's retry and dead-letter policy takes it from there.
    assert subscriber.nacked == [bad]
    assert subscriber.acked == []


@INLINE_IO
async def test_a_failed_write_is_not_acked(
    codec: EventCodec, monkeypatch: pytest.MonkeyPatch, inline_io: bool
) -> None:
    store, clock = FakeDocumentStore(), Clock()
    writer, subscriber = make_writer(codec, store, clock, inline_io)
    subscriber.deliver(ping_message(codec, 0, lat=12.0))
    await writer.consume()

    def unavailable(*_: object, **__: object) -> None:
        raise Unavailable("store down")

    monkeypatch.setattr(store, "run_transaction", unavailable)
    await writer.flush_once()
    assert subscriber.acked == []
    monkeypatch.undo()
    clock.now = 5.0
    await writer.flush_once()
    assert len(subscriber.acked) == 1
    assert store.get("live_map/veh-1") is not None
