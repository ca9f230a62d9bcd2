"""Group commit on an event loop, written on one writer thread in order: for state a loop changes.

``group_commit.Committer`` answers requests that each await their own transaction; this is for
a loop that must write its state out durably without waiting for each write (the embedded
Workflows engine's checkpoints, ``meridian.embedded.workflows.checkpoints``):

* A source ``queue``s itself when it has something to write. Every source queued during one turn
  of the event loop is taken when the turn ends (``Source.take``, on the loop, so it serialises
  its state as it stands then, with no other thread reading it), and the batch is written in one
  call of ``write`` on a writer thread, while the loop goes on.
* One batch is in flight at a time, and batches land in order. Sources queued while one is in
  flight are taken when it lands, into the next one: the slower the store, the bigger the batches.
* The future ``queue`` gives resolves once the source's writes are committed. Batches land in
  order, so it resolves only after every earlier future of the source is done (a source that
  hears of a failure cancels what it queued since). ``flush`` commits what is queued now, on the calling
  thread, after the batch in flight (for shutdown, or before an answer that must see committed
  state).
* A batch whose write raises is written again source by source, so one source's bad write (a
  document over the size limit) fails that source alone. A source that fails (its write, or its
  ``take``) hears it through ``Source.failed``, synchronously (before ``flush`` returns), and its
  future fails with the error. A source that gave up on a queued write cancels its future: it is
  then not taken.

Used from one event loop's thread (``flush`` and ``close`` included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

W = TypeVar("W")
W_co = TypeVar("W_co", covariant=True)


class Source(Protocol[W_co]):
    """Something with state to write: what it writes is decided when its batch forms."""

    def take(self) -> Sequence[W_co]:
        """The writes that bring the store up to date with this source (called on the loop)."""
        ...

    def failed(self, error: Exception) -> None:
        """Its writes were not committed (or ``take`` raised)."""
        ...


# One source in a batch: the source, its future, its writes.
_Taken = tuple[Source[W], asyncio.Future[None], Sequence[W]]


class OrderedWriter(Generic[W]):
    """Writes, through ``write(writes)`` (atomic: all or none), what sources queue on one event
    loop, one batch per loop turn, on a writer thread, one batch at a time and in order."""

    def __init__(self, write: Callable[[list[W]], object], thread_name: str = "ordered-writer"):
        self._write_all = write
        self._thread_name = thread_name
        self._queued: list[tuple[Source[W], asyncio.Future[None]]] = []
        self._kick_pending = False
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: Future[list[Exception | None]] | None = None
        self._inflight_batch: list[_Taken[W]] = []

    def queue(self, source: Source[W]) -> asyncio.Future[None]:
        """Take ``source``'s writes into the next batch; the future resolves once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queued.append((source, future))
        if not self._kick_pending:
            self._kick_pending = True
            loop.call_soon(self._kick)
        return future

    def flush(self) -> None:
        """Commit everything queued so far, now, on the calling thread (after the batch in
        flight: batches apply in order)."""
        self._settle()
        batch = self._take()
        if batch:
            self._report(batch, self._write([writes for _, _, writes in batch]))

    def close(self) -> None:
        """Settle the batch in flight and stop the writer thread (a new one starts if needed)."""
        self._settle()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _kick(self) -> None:
        """Hand what is queued to the writer, unless a batch is in flight (its landing kicks)."""
        self._kick_pending = False
        if self._inflight is not None:
            return
        batch = self._take()
        if not batch:
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix=self._thread_name)
        loop = asyncio.get_running_loop()
        inflight = self._writer.submit(self._write, [writes for _, _, writes in batch])
        self._inflight, self._inflight_batch = inflight, batch
        inflight.add_done_callback(lambda _: loop.call_soon_threadsafe(self._landed, inflight))

    def _landed(self, inflight: Future[list[Exception | None]]) -> None:
        if inflight is not self._inflight:
            return  # a synchronous flush settled it already
        self._settle()
        self._kick()  # what was queued while it was in flight

    def _settle(self) -> None:
        """Wait for the batch in flight and report its outcome to its sources."""
        inflight, batch = self._inflight, self._inflight_batch
        self._inflight, self._inflight_batch = None, []
        if inflight is None:
            return
        error = inflight.exception()
        if error is None:
            self._report(batch, inflight.result())
        else:  # only a BaseException escapes _write
            failure = error if isinstance(error, Exception) else RuntimeError(error)
            self._report(batch, [failure] * len(batch))

    def _take(self) -> list[_Taken[W]]:
        queued, self._queued = self._queued, []
        batch: list[_Taken[W]] = []
        for source, future in queued:
            if future.done():
                continue  # its source gave up on it (it failed, or closed)
            try:
                writes = source.take()
            except Exception as e:
                self._fail(source, future, e)
                continue
            batch.append((source, future, writes))
        return batch

    def _write(self, parts: list[Sequence[W]]) -> list[Exception | None]:
        """Each part's outcome: all in one ``write``; if that raises, with more than one part,
        each part alone (one part's bad write must not fail the others)."""
        try:
            self._write_all([w for part in parts for w in part])
        except Exception as e:
            if len(parts) == 1:
                return [e]
        else:
            return [None] * len(parts)
        outcomes: list[Exception | None] = []
        for part in parts:
            try:
                self._write_all(list(part))
            except Exception as own:
                outcomes.append(own)
            else:
                outcomes.append(None)
        return outcomes

    def _report(self, batch: list[_Taken[W]], outcomes: list[Exception | None]) -> None:
        for (source, future, _), error in zip(batch, outcomes, strict=True):
            if error is not None:
                self._fail(source, future, error)
            elif not future.done():
                future.set_result(None)

    @staticmethod
    def _fail(source: Source[W], future: asyncio.Future[None], error: Exception) -> None:
        if not future.done():
            future.set_exception(error)
            future.exception()  # retrieved: the source hears of it, whether or not one awaits
        source.failed(error)
