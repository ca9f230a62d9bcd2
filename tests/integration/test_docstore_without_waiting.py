"""``db.without_waiting`` on the embedded store (issue #24 item 2): a write transaction takes the
lock at once or raises ``LockBusy`` at once with nothing written, whether another connection
(as another process would) or another thread of this process holds it; once the block has
committed, what it writes next waits as usual."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meridian.embedded.docstore import EmbeddedDocumentStore, db
from meridian.embedded.sqlite import process_write_lock
from meridian.ports import Transaction


def write(path: str) -> Callable[[Transaction], str]:
    def work(tx: Transaction) -> str:
        tx.set(path, {"v": 1})
        return path

    return work


def test_a_lock_held_by_another_connection_is_not_waited_for(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    other = db.connect(store.file, 5000)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(db.LockBusy, match="another process holds"), db.without_waiting():
        store.run_transactions([write("parcels/p-1")])
    assert time.monotonic() - started < 0.2  # the busy timeout is 5 s
    other.execute("ROLLBACK")
    assert store.get("parcels/p-1") is None
    with db.without_waiting():
        assert store.run_transactions([write("parcels/p-1")]) == ["parcels/p-1"]
    assert store.get("parcels/p-1") is not None
    other.close()
    store.close()


def test_a_lock_held_by_another_thread_of_the_process_is_not_waited_for(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    held = process_write_lock(store.file)  # as another thread's write would hold it
    with held, pytest.raises(db.LockBusy, match="another thread"), db.without_waiting():
        store.run_transaction(write("parcels/p-1"))
    assert store.get("parcels/p-1") is None
    store.close()


def test_after_a_commit_the_rest_of_the_block_waits_its_turn(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    other = db.connect(store.file, 5000)
    with db.without_waiting():
        store.run_transaction(write("parcels/first"))
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, lambda: other.execute("ROLLBACK")).start()
        started = time.monotonic()
        store.run_transaction(write("parcels/second"))
        assert time.monotonic() - started >= 0.2
    assert store.get("parcels/second") is not None
    other.close()
    store.close()
