"""The broker honours the document store's ``db.without_waiting`` (issue #24 item 2): within it a
publish takes the broker's write lock only if it is free at once, else ``LockBusy`` at once with
nothing stored; once a write of the block has committed, the rest waits as usual."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from meridian.embedded.docstore import db
from meridian.embedded.pubsub.broker import DB_FILE, Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.ports import Message


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    broker = Broker(tmp_path)
    broker.create_topic("pings")
    broker.create_subscription(SubscriptionConfig(name="all", topic="pings"))
    return broker


def test_a_lock_another_process_holds_is_not_waited_for(broker: Broker, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with (
        pytest.raises(db.LockBusy, match="another process holds the Pub/Sub broker's"),
        db.without_waiting(),
    ):
        broker.publish("pings", [Message(b"one")])
    assert time.monotonic() - started < 0.2
    other.execute("ROLLBACK")
    assert broker.pull("all") == []  # nothing of it stored
    with db.without_waiting():  # free: taken at once
        broker.publish("pings", [Message(b"two")])
    assert [m.message.data for m in broker.pull("all")] == [b"two"]
    other.close()
    broker.close()


def test_a_lock_another_thread_of_the_process_holds_is_not_waited_for(broker: Broker) -> None:
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with broker.store.write():
            entered.set()
            leave.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    with pytest.raises(db.LockBusy, match="another thread of this process"), db.without_waiting():
        broker.publish("pings", [Message(b"one")])
    leave.set()
    holder.join(5)
    assert broker.pull("all") == []
    broker.close()


def test_after_a_commit_the_rest_of_the_block_waits_its_turn(
    broker: Broker, tmp_path: Path
) -> None:
    # Freed from a timer's thread.
    other = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None, check_same_thread=False)
    with db.without_waiting():
        broker.publish("pings", [Message(b"first")])
        assert not db.at_once_only()
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, other.execute, ("ROLLBACK",)).start()
        started = time.monotonic()
        broker.publish("pings", [Message(b"second")])  # waited for the lock, not refused
        assert time.monotonic() - started >= 0.2
    assert [m.message.data for m in broker.pull("all")] == [b"first", b"second"]
    other.close()
    broker.close()
