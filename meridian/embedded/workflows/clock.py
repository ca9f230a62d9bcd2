"""Injectable time: the engine reads ``now()`` and waits with ``sleep()``, so tests can run
backoffs and timeouts on a virtual clock without waiting."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A virtual clock. With ``auto=True`` every sleep advances time at once (and is recorded in
    ``sleeps``); with ``auto=False`` sleepers wait until a test calls ``advance``. Thread-safe:
    the engine's loop runs in its own thread."""

    def __init__(self, start: float = 1_700_000_000.0, auto: bool = True) -> None:
        self._now = start
        self.auto = auto
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._waiters: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        loop = asyncio.get_running_loop()
        with self._lock:
            self.sleeps.append(seconds)
            if self.auto:
                self._now += seconds
                future = None
            else:
                future = loop.create_future()
                self._waiters.append((self._now + seconds, loop, future))
        if future is None:
            await asyncio.sleep(0)
            return
        try:
            await future
        finally:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[2] is not future]

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        with self._lock:
            self._now += seconds
            due = [w for w in self._waiters if w[0] <= self._now]
        for _, loop, future in due:
            loop.call_soon_threadsafe(_resolve, future)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
