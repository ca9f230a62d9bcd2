"""Where an event loop runs an adapter's blocking calls: on its own thread, or in a worker thread.

Chosen once, by ``meridian.adapters.offload``, from the adapters in use, and passed to services
by their bootstrap; no service tests which adapter it has. On the embedded runtime a call (a
SQLite commit, an embedded publish) is local CPU work of a millisecond or less, and handing it to
a thread and back cost more than the call: 10% of the command service's CPU per telemetry batch,
4-6% of a live-map writer process (side-by-side runs at 3,800 pings/s), from the hop and two
threads contending for the GIL. On Google's services a call is network round trips, which must
never hold the event loop.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class Offload(abc.ABC):
    @abc.abstractmethod
    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``, with the caller's context (its trace and log fields)."""


class Inline(Offload):
    """On the event loop's own thread: for local work shorter than a thread hop."""

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return function(*args)


class InThread(Offload):
    """In a worker thread of ``executor`` (the loop's default one if None): for network I/O."""

    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        context = contextvars.copy_context()
        call = functools.partial(context.run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
