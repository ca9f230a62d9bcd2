"""The step ledger's group commit: concurrent entries share a write, each caller returns once its
own entry is stored, an entry already there is not an error, and a failed write fails every
caller whose entry it carried."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from meridian.domain.errors import Unavailable
from services.dispatch.ledger import LedgerWriter
from tests.fakes import FakeDocumentStore


class SlowStore(FakeDocumentStore):
    """A store whose batch writes take a while (waiting for the write lock), and count."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail = fail

    def batch_write(self, writes: Sequence[tuple[str, str, Mapping[str, Any] | None]]) -> None:
        time.sleep(0.05)
        self.batches.append(len(writes))
        if self.fail:
            raise Unavailable("store write lock held too long")
        super().batch_write(writes)


def _create_concurrently(writer: LedgerWriter, count: int) -> list[BaseException | None]:
    outcomes: list[BaseException | None] = [None] * count
    start = threading.Barrier(count)

    def one(i: int) -> None:
        start.wait()
        try:
            writer.create(f"ledger/k{i}", {"response": i})
        except BaseException as e:
            outcomes[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return outcomes


def test_concurrent_entries_share_writes_and_are_all_stored() -> None:
    store = SlowStore()

    outcomes = _create_concurrently(LedgerWriter(store), 12)

    assert outcomes == [None] * 12
    assert sum(store.batches) == 12
    assert len(store.batches) < 12  # those that arrived during a write waited for the next one
    for i in range(12):
        entry = store.get(f"ledger/k{i}")
        assert entry is not None and entry.data == {"response": i}


def test_an_entry_already_there_is_kept_and_the_rest_are_written() -> None:
    store = FakeDocumentStore()
    store.create("ledger/k1", {"response": "first"})
    writer = LedgerWriter(store)

    writer.create("ledger/k1", {"response": "second"})
    writer.create("ledger/k2", {"response": 2})

    first = store.get("ledger/k1")
    assert first is not None and first.data == {"response": "first"}
    assert store.get("ledger/k2") is not None


def test_a_failed_write_fails_every_caller_it_carried() -> None:
    store = SlowStore(fail=True)

    outcomes = _create_concurrently(LedgerWriter(store), 6)

    assert all(isinstance(o, Unavailable) for o in outcomes)
    assert store.get("ledger/k0") is None


def test_a_writer_keeps_working_after_a_failure() -> None:
    store = SlowStore(fail=True)
    writer = LedgerWriter(store)
    with pytest.raises(Unavailable):
        writer.create("ledger/a", {"response": 1})

    store.fail = False
    writer.create("ledger/b", {"response": 2})

    assert store.get("ledger/b") is not None
