"""The webhook sender loop, run beside the push endpoint in the reactor's process: it wakes when
an event was enqueued or every ``poll_s`` (for scheduled retries) and sends what is due, a few at
a time. On Cloud Run the service needs CPU always allocated (terraform) for this loop to run."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from meridian.observability import get_logger
from services.reactors.webhook.handlers import Deps, claim_due, send_claimed

log = get_logger(__name__)


class Worker:
    def __init__(self, deps: Deps, concurrency: int = 16, poll_s: float = 0.5) -> None:
        self._deps = deps
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def nudge(self) -> None:
        """Wake the loop now; safe from any thread (handlers run in the threadpool)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _send(self, claimed: dict[str, Any]) -> None:
        try:
            outcome = await asyncio.to_thread(send_claimed, claimed, self._deps)
            log.info("webhook attempt", delivery=claimed["path"], outcome=outcome)
        except Exception:
            log.exception("webhook attempt failed; it stays pending", delivery=claimed["path"])
        finally:
            self._wake.set()  # a slot is free

    async def run(self) -> None:
        """Claim as many due deliveries as there are free slots, in one go, and send each of
        them; look again when an event is enqueued, a send finishes, or every ``poll_s``."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            free = self._concurrency - len(self._in_flight)
            claimed: list[dict[str, Any]] = []
            if free > 0:
                try:
                    claimed = await asyncio.to_thread(claim_due, self._deps, free)
                except Exception:
                    log.exception("could not claim due webhook deliveries")
            for delivery in claimed:
                task = asyncio.create_task(self._send(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if len(claimed) == free > 0:
                continue  # every slot filled: more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
