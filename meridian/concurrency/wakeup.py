"""A cheap wake-up signal for event-loop workers that wait for "something happened" or a timeout."""

from __future__ import annotations

import asyncio


class Wakeup:
    """An ``asyncio.Event`` whose wait with a timeout costs one future and one timer.

    ``asyncio.wait_for(event.wait(), timeout)`` makes a task per wait, and ``asyncio.wait`` over
    the requests in flight a callback on each of them per wait; loops that wait once or twice per
    message (the platform's push deliveries, the webhook sender) paid several percent of their
    CPU for that alone.
    """

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self, timeout: float | None = None) -> None:
        """Return once set, or after ``timeout`` seconds (never, if None)."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, release, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def release(waiter: asyncio.Future[None]) -> None:
    """End ``waiter``'s wait, unless something already has (a timer or a signal, whichever first)."""
    if not waiter.done():
        waiter.set_result(None)
