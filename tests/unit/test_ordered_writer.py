"""The event-loop group commit written on one writer thread (``OrderedWriter``): what sources queue
during one loop turn is taken when the turn ends and written in one call, one batch at a time and
in order; a source's future resolves once its writes are committed; ``flush`` commits on the
calling thread; a failed write fails its sources (alone when the batch can be split) and their
waiters."""

from __future__ import annotations

import asyncio
import threading

import pytest

from meridian.concurrency.ordered_writer import OrderedWriter


class Store:
    """Records each ``write`` call (thread, writes); a write containing "bad" raises; writes wait
    while ``gate`` is clear."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.writing = threading.Event()

    def write(self, writes: list[str]) -> None:
        self.writing.set()
        assert self.gate.wait(5)
        self.threads.append(threading.current_thread().name)
        if any("bad" in w for w in writes):
            raise ValueError(f"refused {writes}")
        self.calls.append(writes)


class Source:
    """Writes what it was told to, as it stands when taken."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list[str] = []
        self.takes = 0
        self.errors: list[Exception] = []

    def add(self, writer: OrderedWriter[str], *writes: str) -> asyncio.Future[None]:
        self.pending.extend(writes)
        return writer.queue(self)

    def take(self) -> list[str]:
        self.takes += 1
        taken, self.pending = self.pending, []
        return taken

    def failed(self, error: Exception) -> None:
        self.errors.append(error)


async def landed(future: asyncio.Future[None]) -> None:
    await asyncio.wait_for(asyncio.shield(future), 5)


async def test_sources_queued_in_one_turn_are_taken_at_its_end_and_written_together() -> None:
    store = Store()
    writer = OrderedWriter(store.write, "test-writer")
    a, b = Source("a"), Source("b")
    first = a.add(writer, "a1")
    second = b.add(writer, "b1")
    a.pending.append("a2")  # changed later in the same turn: taken as it stands at the end
    assert a.takes == b.takes == 0
    await asyncio.gather(landed(first), landed(second))
    assert store.calls == [["a1", "a2", "b1"]]
    assert store.threads == ["test-writer_0"]  # on the writer thread, not the loop's
    assert a.takes == b.takes == 1
    writer.close()


async def test_one_batch_in_flight_and_what_comes_meanwhile_is_the_next_batch_in_order() -> None:
    store = Store()
    writer = OrderedWriter(store.write)
    store.gate.clear()
    first = Source("a").add(writer, "1")
    await asyncio.sleep(0)  # the turn ends: batch 1 goes to the writer and blocks there
    assert await asyncio.to_thread(store.writing.wait, 5)
    later = [Source(f"s{i}").add(writer, f"2.{i}") for i in range(3)]
    await asyncio.sleep(0.01)
    assert not first.done() and not any(f.done() for f in later)  # nothing reported early
    store.gate.set()
    await asyncio.gather(*(landed(f) for f in [first, *later]))
    assert store.calls == [["1"], ["2.0", "2.1", "2.2"]]
    writer.close()


async def test_the_future_resolves_only_once_the_write_is_committed() -> None:
    store = Store()
    writer = OrderedWriter(store.write)
    store.gate.clear()
    future = Source("a").add(writer, "x")
    await asyncio.sleep(0)
    assert await asyncio.to_thread(store.writing.wait, 5)
    await asyncio.sleep(0.01)
    assert not future.done()
    store.gate.set()
    await landed(future)
    assert store.calls == [["x"]]
    writer.close()


async def test_flush_writes_on_the_calling_thread_after_the_batch_in_flight() -> None:
    store = Store()
    writer = OrderedWriter(store.write)
    store.gate.clear()
    first = Source("a").add(writer, "1")
    await asyncio.sleep(0)
    assert await asyncio.to_thread(store.writing.wait, 5)
    second = Source("b").add(writer, "2")
    threading.Timer(0.05, store.gate.set).start()
    writer.flush()  # waits for batch 1, then writes batch 2 here
    assert store.calls == [["1"], ["2"]]
    assert store.threads[1] == threading.current_thread().name
    assert first.done() and second.done() and second.exception() is None
    await asyncio.sleep(0.01)  # batch 1's landing comes after the flush settled it: ignored
    assert store.calls == [["1"], ["2"]]
    writer.close()


async def test_a_failed_batch_is_split_so_only_the_bad_source_and_its_waiters_fail() -> None:
    store = Store()
    writer = OrderedWriter(store.write)
    good, bad = Source("good"), Source("bad")
    ok = good.add(writer, "fine")
    refused = bad.add(writer, "bad doc")
    await landed(ok)
    with pytest.raises(ValueError, match="refused"):
        await landed(refused)
    assert store.calls == [["fine"]]  # the batch as a whole was refused, then "fine" alone
    assert good.errors == []
    assert [type(e) for e in bad.errors] == [ValueError]
    writer.close()


async def test_a_failure_is_reported_to_its_source_before_flush_returns() -> None:
    store = Store()
    writer = OrderedWriter(store.write)
    bad = Source("bad")
    refused = bad.add(writer, "bad doc")
    writer.flush()
    assert [type(e) for e in bad.errors] == [ValueError]
    assert isinstance(refused.exception(), ValueError)
    writer.close()


async def test_a_source_whose_take_raises_fails_alone() -> None:
    class Broken(Source):
        def take(self) -> list[str]:
            raise TypeError("cannot serialise")

    store = Store()
    writer = OrderedWriter(store.write)
    broken, fine = Broken("broken"), Source("fine")
    failed = broken.add(writer, "x")
    ok = fine.add(writer, "y")
    await landed(ok)
    with pytest.raises(TypeError):
        await landed(failed)
    assert store.calls == [["y"]]
    assert [type(e) for e in broken.errors] == [TypeError]
    writer.close()


async def test_a_queued_write_whose_future_is_cancelled_is_not_taken() -> None:
    store = Store()
    writer = OrderedWriter(store.write)
    dropped, kept = Source("dropped"), Source("kept")
    dropped.add(writer, "x").cancel()  # its source gave up on it (closed) before the turn ended
    await landed(kept.add(writer, "y"))
    assert dropped.takes == 0
    assert store.calls == [["y"]]
    writer.close()
