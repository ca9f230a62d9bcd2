"""The delivery loops' idle wait (``push.Changes``): woken by a publish from another process's
connection or this one, and otherwise only when its time is up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from meridian.embedded.pubsub import Broker, SubscriptionConfig
from meridian.embedded.pubsub.push import MAX_IDLE_S, Changes, idle_wait_s, next_due
from meridian.ports import Message


def _broker(tmp_path: Path) -> Broker:
    broker = Broker(tmp_path)
    broker.create_topic("t")
    broker.create_subscription(SubscriptionConfig(name="s", topic="t"))
    return broker


async def _waited(changes: Changes, since: tuple[int, int], timeout: float) -> float:
    started = time.monotonic()
    await changes.wait(since, timeout)
    return time.monotonic() - started


def test_an_idle_wait_ends_when_another_connection_publishes(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    other = Broker(tmp_path)  # another process's view of the same file

    async def scenario() -> float:
        changes = Changes(broker)
        looked = changes.version()
        assert next_due(broker, "s") is None  # nothing there: the loop would wait
        waiting = asyncio.create_task(_waited(changes, looked, 5.0))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(other.publish, "t", [Message(data=b"x")])
        return await waiting

    assert asyncio.run(scenario()) < 1.0
    assert next_due(broker, "s") is not None


def test_an_idle_wait_ends_at_once_when_the_broker_changed_after_the_loop_looked(
    tmp_path: Path,
) -> None:
    broker = _broker(tmp_path)

    async def scenario() -> float:
        changes = Changes(broker)
        looked = changes.version()
        broker.publish("t", [Message(data=b"x")])  # between the look and the wait
        return await _waited(changes, looked, 5.0)

    assert asyncio.run(scenario()) < 0.5


def test_an_idle_wait_with_nothing_happening_lasts_its_timeout(tmp_path: Path) -> None:
    broker = _broker(tmp_path)

    async def scenario() -> float:
        changes = Changes(broker)
        return await _waited(changes, changes.version(), 0.2)

    assert 0.19 <= asyncio.run(scenario()) < 1.0


def test_an_idle_loop_waits_until_its_next_message_falls_due_at_most_max_idle() -> None:
    assert idle_wait_s(None, 100.0) == MAX_IDLE_S
    assert idle_wait_s(100.1, 100.0) == pytest.approx(0.1)
    assert idle_wait_s(99.0, 100.0) == 0.0
    assert idle_wait_s(500.0, 100.0) == MAX_IDLE_S
