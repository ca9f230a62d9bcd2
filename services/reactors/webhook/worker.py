"""The webhook sender loop, run beside the push endpoint in the reactor's process: it wakes when
an event was enqueued or every ``poll_s`` (for scheduled retries) and sends what is due, a few at
a time. On Cloud Run the service needs CPU always allocated (terraform) for this loop to run."""

from __future__ import annotations

import asyncio
import contextlib

from meridian.observability import get_logger
from services.reactors.webhook.handlers import Deps, attempt, due

log = get_logger(__name__)


class Worker:
    def __init__(self, deps: Deps, concurrency: int = 16, poll_s: float = 0.5) -> None:
        self._deps = deps
        self._poll_s = poll_s
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def nudge(self) -> None:
        """Wake the loop now; safe from any thread (handlers run in the threadpool)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _send(self, path: str) -> None:
        async with self._slots:
            try:
                outcome = await asyncio.to_thread(attempt, path, self._deps)
                log.info("webhook attempt", delivery=path, outcome=outcome)
            except Exception:
                log.exception("webhook attempt failed; it stays pending", delivery=path)
            finally:
                self._in_flight.discard(path)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        while True:
            self._wake.clear()
            try:
                paths = await asyncio.to_thread(due, self._deps)
            except Exception:
                log.exception("could not list due webhook deliveries")
                paths = []
            for path in paths:
                if path not in self._in_flight:
                    self._in_flight.add(path)
                    task = asyncio.create_task(self._send(path))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
