"""Listeners share one read of what each commit touched: a listener whose document was not
written moves on without reading the change log, and none misses a change of its own however
the commits of other documents interleave (customer streams beside the live map's writer)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meridian.embedded.docstore import EmbeddedDocumentStore, listeners
from meridian.ports import Query, Snapshot


async def values_until(stream: AsyncIterator[Snapshot], last: int) -> list[int]:
    """The ``v`` of each snapshot's document, from the first, until ``last`` is seen."""
    seen: list[int] = []
    async for snapshot in stream:
        for document in snapshot.documents:
            seen.append(document.data["v"])
        if seen and seen[-1] == last:
            return seen
    raise AssertionError("the listener ended")


async def test_listeners_see_every_change_of_theirs_and_read_only_for_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    store.set("parcels/a", {"v": 0})
    store.set("parcels/b", {"v": 0})
    reads: dict[str, int] = {"parcels/a": 0, "parcels/b": 0}
    changes_of_path = listeners.changes_of_path

    def counted(conn, after_seq, upto_seq, path):  # type: ignore[no-untyped-def]
        reads[path] = reads.get(path, 0) + 1
        return changes_of_path(conn, after_seq, upto_seq, path)

    monkeypatch.setattr(listeners, "changes_of_path", counted)
    a = store.watch_document("parcels/a")
    b = store.watch_document("parcels/b")
    parcels = store.watch_query(Query("parcels"))
    first = [await anext(s) for s in (a, b, parcels)]  # subscribed, at their snapshots
    assert len(first[2].documents) == 2

    def write() -> None:
        # Each parcel is written 10 times among 200 commits of other documents, with pauses
        # so that the hub wakes for most commits on their own.
        for n in range(1, 201):
            store.set(f"vehicles/v-{n % 7}", {"n": n})
            if n % 20 == 0:
                store.set("parcels/a", {"v": n // 20})
            if n % 20 == 10:
                store.set("parcels/b", {"v": n // 20 + 1})
            time.sleep(0.002)

    writer = threading.Thread(target=write)
    writer.start()
    seen_a, seen_b = await asyncio.wait_for(
        asyncio.gather(values_until(a, 10), values_until(b, 10)), 30
    )
    writer.join()
    # Every change, in order: listeners woken by a batch that merged commits read them all.
    assert seen_a == list(range(1, 11))
    assert seen_b == list(range(1, 11))
    # Some wake-ups carried both a vehicle's commit and the parcel's, but a listener never read
    # for the ~200 that carried only other documents.
    assert reads["parcels/a"] <= 10 and reads["parcels/b"] <= 10
    for stream in (a, b, parcels):
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_listener_that_starts_between_batches_misses_nothing(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    store.set("parcels/a", {"v": 0})
    early = store.watch_document("parcels/b")
    await anext(early)  # the hub runs, reading batches from here on
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            store.set(f"vehicles/v-{n % 5}", {"n": n})
            time.sleep(0.001)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        late = store.watch_document("parcels/a")  # its snapshot is at no batch's boundary
        assert (await anext(late)).documents[0].data["v"] == 0
        for v in range(1, 6):
            await asyncio.to_thread(store.set, "parcels/a", {"v": v})
            snapshot = await asyncio.wait_for(anext(late), 10)
            assert snapshot.documents[0].data["v"] == v
    finally:
        stop.set()
        churner.join()
    await late.aclose()  # type: ignore[attr-defined]
    await early.aclose()  # type: ignore[attr-defined]
