"""Push delivery: POST each message of a push subscription to its endpoint (reference §3).

The body is Pub/Sub's wrapped JSON envelope; 102/200/201/202/204 acknowledge, anything else (or
no answer within the ack deadline, which is the request timeout) is a nack that the retry policy
and dead-letter policy then handle exactly as for pull. Each subscription has a push window
(reference §3.3 [impl]): it starts at 4 outstanding requests, doubles on success up to
``max_outstanding``, halves on failure; a failed answer also pauses the subscription, 100 ms
doubling to 60 s, so a broken endpoint is not hammered. Requests flow continuously: a slot freed
by answers is filled as soon as a quarter of the window is free, not when the rest of a batch
has answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from meridian.concurrency.wakeup import Wakeup, release
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.embedded.pubsub.delivery import rfc3339
from meridian.ports import ReceivedMessage
from meridian.wire.pool import Http1Pool, HttpxPoster, Poster, PostFailed

ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
MIN_PAUSE_S = 0.1
MAX_PAUSE_S = 60.0
START_WINDOW = 4
MIN_POLL_S = 0.005
CONFIG_REFRESH_S = 1.0
MAX_POLL_S = 0.05
MAX_IDLE_S = 0.25  # an idle loop looks again at least this often, whatever it was told
ACK_BATCH = 32
ACK_DELAY_S = 0.005


def envelope(
    message: ReceivedMessage, subscription: str, project: str, dead_lettering: bool
) -> dict[str, Any]:
    """The wrapped push body of reference §3.1."""
    published = rfc3339(message.publish_time.timestamp())
    body: dict[str, Any] = {
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": published,
        "publish_time": published,
    }
    if message.message.data:
        body["data"] = base64.b64encode(message.message.data).decode()
    if message.message.attributes:
        body["attributes"] = dict(message.message.attributes)
    if message.message.ordering_key:
        body["orderingKey"] = message.message.ordering_key
    wrapped: dict[str, Any] = {
        "message": body,
        "subscription": f"projects/{project}/subscriptions/{subscription}",
    }
    if dead_lettering:
        wrapped["deliveryAttempt"] = message.delivery_attempt
    return wrapped


def next_due(broker: Broker, subscription: str) -> float | None:
    """When the next message of ``subscription`` is due (broker clock; None if it has none): one
    indexed read, which (unlike a pull) takes no write lock, so idle delivery loops can poll it
    cheaply."""
    db = broker.store.connection()
    sub = broker.topology.subscription(subscription, db)
    (due,) = db.execute("SELECT min(due) FROM backlog WHERE sub_id = ?", (sub.id,)).fetchone()
    return float(due) if due is not None else None


class Changes:
    """Whether the broker may hold new messages, watched once per process for all its delivery
    loops: every ``every_s``, SQLite's ``data_version`` (a commit by any other connection, so any
    other process too) and the broker's own generation. A loop that found nothing due waits here
    until something changes or its next message falls due, where each idle loop used to poll
    its subscription every 5 ms: a dozen loops made the idle platform a tenth of a core busy.
    """

    def __init__(self, broker: Broker, every_s: float = MIN_POLL_S) -> None:
        self._broker = broker
        self._every_s = every_s
        self._waiters: dict[asyncio.Future[None], tuple[int, int]] = {}
        self._watching: asyncio.Task[None] | None = None

    def version(self) -> tuple[int, int]:
        """What the broker looks like now; pass it to ``wait`` after looking for messages."""
        return (self._broker.store.data_version(), self._broker.generation)

    async def wait(self, since: tuple[int, int], timeout: float) -> None:
        """Return once the broker has changed from ``since`` (at once if it already has), or
        after ``timeout`` seconds."""
        if self.version() != since:
            return
        if self._watching is None or self._watching.done():
            self._watching = asyncio.create_task(self._watch())
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters[waiter] = since
        timer = loop.call_later(timeout, release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.pop(waiter, None)

    async def _watch(self) -> None:
        """Runs while anyone waits (the next ``wait`` starts it again)."""
        while self._waiters:
            await asyncio.sleep(self._every_s)
            now = self.version()
            for waiter, since in list(self._waiters.items()):
                if now != since:
                    release(waiter)


def idle_wait_s(due: float | None, now: float) -> float:
    """How long a loop that found nothing due may wait for a change: until its next message
    falls due (a retry's backoff, a lease running out), at most ``MAX_IDLE_S``."""
    return MAX_IDLE_S if due is None else min(MAX_IDLE_S, max(0.0, due - now))


def worth_pulling(room: int, window: int, in_flight: int) -> bool:
    """Whether to pull now: at once when nothing is in flight, else once a quarter of the window
    is free. Topping up one slot per answer made a pull (a write transaction on the broker, and
    a trip to a worker thread) per pushed message, the platform's main cost per push after the
    POST itself; a quarter of the window keeps the rest of it busy meanwhile."""
    return room > 0 and (in_flight == 0 or room >= max(1, window // 4))


@dataclass
class IdlePoll:
    """How long a delivery loop waits before looking again: not at all right after a pull that
    found messages (more may be waiting), ``MIN_POLL_S`` when nothing is due, and doubling up to
    ``MAX_POLL_S`` while pulls come back empty though something is due (an ordered key held back
    by its message in flight), so that case does not become a stream of empty pulls."""

    wait: float = 0.0

    def after(self, pulled: int | None) -> float:
        """``pulled``: how many messages the pull found, None if there was no pull."""
        if pulled is None:
            self.wait = MIN_POLL_S
        elif pulled:
            self.wait = 0.0
        else:
            self.wait = min(MAX_POLL_S, max(MIN_POLL_S, self.wait * 2))
        return self.wait


class Answers:
    """The requests of a delivery loop that have answered, collected as they finish: each
    request gets one callback, once, where ``asyncio.wait(in_flight, FIRST_COMPLETED)`` added
    and removed one on every request in flight at each wait (see ``meridian.concurrency.wakeup``)."""

    def __init__(self) -> None:
        self._done: list[asyncio.Task[bool]] = []
        self._answered = Wakeup()

    def track(self, request: asyncio.Task[bool]) -> None:
        request.add_done_callback(self._finished)

    def _finished(self, request: asyncio.Task[bool]) -> None:
        self._done.append(request)
        self._answered.set()

    async def wait(self, timeout: float | None) -> list[asyncio.Task[bool]]:
        """The requests that answered since the last call, waiting up to ``timeout`` seconds
        (forever if None) for a first one; [] when the time is up."""
        if not self._done and timeout != 0:
            await self._answered.wait(timeout)
        self._answered.clear()
        done, self._done = self._done, []
        return done


@dataclass
class _Window:
    size: int = START_WINDOW
    pause: float = 0.0

    def succeeded(self, limit: int) -> None:
        self.size = min(limit, self.size * 2)
        self.pause = 0.0

    def failed(self) -> None:
        self.size = max(1, self.size // 2)
        self.pause = min(MAX_PAUSE_S, max(MIN_PAUSE_S, self.pause * 2))


class PushDispatcher:
    """Delivers every push subscription of the broker until ``stop()``; runs in the platform
    process. ``on_delivered`` (for benchmarks and tests) sees each acked message."""

    def __init__(
        self,
        broker: Broker,
        issuer: TokenIssuer,
        client: httpx.AsyncClient | None = None,
        max_outstanding: int = 64,
        on_delivered: Callable[[ReceivedMessage], Awaitable[None] | None] | None = None,
    ) -> None:
        self._broker = broker
        self._issuer = issuer
        self._client = client
        self._max_outstanding = max_outstanding
        self._on_delivered = on_delivered
        self._stopping = asyncio.Event()
        self._changes = Changes(broker)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, refresh_s: float = 1.0) -> None:
        """Run one delivery loop per push subscription, picking up new ones every ``refresh_s``."""
        loops: dict[str, asyncio.Task[None]] = {}
        try:
            while not self._stopping.is_set():
                subs = await asyncio.to_thread(self._broker.list_subscriptions)
                pushing = {s.name for s in subs if s.kind == "push"}
                for name in pushing - loops.keys():
                    loops[name] = asyncio.create_task(self._deliver(name))
                for name in list(loops):
                    if name not in pushing or loops[name].done():
                        loops.pop(name).cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), refresh_s)
        finally:
            for task in loops.values():
                task.cancel()
            await asyncio.gather(*loops.values(), return_exceptions=True)

    async def _deliver(self, subscription: str) -> None:
        """One subscription's delivery loop, with its own connection pool: the lean HTTP/1.1
        client of ``meridian.wire.pool`` (httpx's per-request CPU, not the reactors, bounded the
        platform's push rate), or the httpx client given to the dispatcher (tests mock its
        transport)."""
        poster: Poster
        poster = HttpxPoster(self._client) if self._client else Http1Pool(self._max_outstanding)
        try:
            await self._deliver_with(poster, subscription)
        finally:
            await poster.aclose()

    async def _deliver_with(self, client: Poster, subscription: str) -> None:
        """Keep up to the window's size of requests in flight, topping up as each one answers.

        Requests are not sent in lock-step batches: a batch waited for its slowest request before
        the next one went out, so one slow handler stalled the whole subscription. And an idle
        loop does not pull (a pull is a write transaction on the broker's file, and a stream of
        empty ones from this process starved the other processes' publishes of the write lock):
        it reads when its next message is due (``next_due``), and if none is due yet waits for
        the broker to change (``Changes``) or for that message to fall due.
        """
        window = _Window()
        in_flight: dict[asyncio.Task[bool], ReceivedMessage] = {}
        answers = Answers()
        answered: list[tuple[ReceivedMessage, bool]] = []
        first_answer = 0.0
        idle = IdlePoll()
        config, config_read = self._broker.get_subscription(subscription), time.monotonic()
        try:
            while not self._stopping.is_set():
                if time.monotonic() - config_read > CONFIG_REFRESH_S:  # endpoint changes
                    config, config_read = (
                        self._broker.get_subscription(subscription),
                        time.monotonic(),
                    )
                if config.push_endpoint is None:
                    return
                room = window.size - len(in_flight)
                pulled: int | None = None
                looked, due = self._changes.version(), None
                if worth_pulling(room, window.size, len(in_flight)):
                    due = next_due(self._broker, subscription)
                if due is not None and due <= self._broker.clock():
                    batch = await asyncio.to_thread(self._broker.pull, subscription, room)
                    pulled = len(batch)
                    for message in batch:
                        post = asyncio.create_task(self._post(client, config, message))
                        in_flight[post] = message
                        answers.track(post)
                pause = idle.after(pulled)
                if not in_flight:
                    if pulled is None:  # nothing due: until a change, or the next one falls due
                        wait_s = idle_wait_s(due, self._broker.clock())
                        await self._changes.wait(looked, wait_s)
                    else:
                        await asyncio.sleep(pause)
                    continue
                # A full window waits for an answer; otherwise look again after the pause.
                timeout = None if len(in_flight) >= window.size else pause
                if answered:  # and answers already in wait at most ACK_DELAY_S to be acked
                    timeout = min(ACK_DELAY_S, timeout if timeout is not None else ACK_DELAY_S)
                done = await answers.wait(timeout)
                if done and not answered:
                    first_answer = time.monotonic()
                answered += [(in_flight.pop(t), t.result()) for t in done]
                # Acks go in groups: one per answer was one broker write transaction per push.
                if answered and (
                    len(answered) >= ACK_BATCH
                    or not all(ok for _, ok in answered)
                    or not in_flight
                    or time.monotonic() - first_answer >= ACK_DELAY_S
                ):
                    await self._settle(subscription, window, answered)
                    answered = []
            if answered:  # stopping: what was answered is done, do not have it redelivered
                await self._settle(subscription, window, answered)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _settle(
        self, subscription: str, window: _Window, answered: list[tuple[ReceivedMessage, bool]]
    ) -> None:
        acked = [m.ack_id for m, ok in answered if ok]
        nacked = [m.ack_id for m, ok in answered if not ok]
        if acked:
            await asyncio.to_thread(self._broker.acknowledge, subscription, acked)
        if nacked:
            await asyncio.to_thread(self._broker.modify_ack_deadline, subscription, nacked, 0)
            window.failed()
            await asyncio.sleep(window.pause)
        else:
            window.succeeded(self._max_outstanding)
        if self._on_delivered is not None:
            for message, ok in answered:
                if ok:
                    outcome = self._on_delivered(message)
                    if outcome is not None:
                        await outcome

    async def _post(
        self, client: Poster, config: SubscriptionConfig, message: ReceivedMessage
    ) -> bool:
        assert config.push_endpoint is not None
        headers = {"Content-Type": "application/json"}
        if config.push_service_account:
            audience = config.push_audience or config.push_endpoint
            token = self._issuer.token(audience, config.push_service_account)
            headers["Authorization"] = f"Bearer {token}"
        body = envelope(
            message, config.name, self._broker.project, config.dead_letter_topic is not None
        )
        try:
            status = await client.post(
                config.push_endpoint,
                json.dumps(body, separators=(",", ":")).encode(),
                headers,
                config.ack_deadline_s,
            )
        except PostFailed:
            return False
        return status in ACK_STATUSES
