"""Push delivery: POST each message of a push subscription to its endpoint (reference §3).

The body is Pub/Sub's wrapped JSON envelope; 102/200/201/202/204 acknowledge, anything else (or
no answer within the ack deadline, which is the request timeout) is a nack that the retry policy
and dead-letter policy then handle exactly as for pull. Each subscription has a push window
(reference §3.3 [impl]): it starts at 4 outstanding requests, doubles on success up to
``max_outstanding``, halves on failure; a failed batch also pauses the subscription, 100 ms
doubling to 60 s, so a broken endpoint is not hammered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.embedded.pubsub.delivery import rfc3339
from meridian.ports import ReceivedMessage

ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
MIN_PAUSE_S = 0.1
MAX_PAUSE_S = 60.0
START_WINDOW = 4


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

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, refresh_s: float = 1.0) -> None:
        """Run one delivery loop per push subscription, picking up new ones every ``refresh_s``."""
        own_client = self._client is None
        client = self._client or httpx.AsyncClient()
        loops: dict[str, asyncio.Task[None]] = {}
        try:
            while not self._stopping.is_set():
                subs = await asyncio.to_thread(self._broker.list_subscriptions)
                pushing = {s.name for s in subs if s.kind == "push"}
                for name in pushing - loops.keys():
                    loops[name] = asyncio.create_task(self._deliver(client, name))
                for name in list(loops):
                    if name not in pushing or loops[name].done():
                        loops.pop(name).cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), refresh_s)
        finally:
            for task in loops.values():
                task.cancel()
            await asyncio.gather(*loops.values(), return_exceptions=True)
            if own_client:
                await client.aclose()

    async def _deliver(self, client: httpx.AsyncClient, subscription: str) -> None:
        window = _Window()
        while not self._stopping.is_set():
            config = await asyncio.to_thread(self._broker.get_subscription, subscription)
            if config.push_endpoint is None:
                return
            batch = await asyncio.to_thread(self._broker.pull, subscription, window.size)
            if not batch:
                await asyncio.to_thread(self._broker.wait, 0.05)
                continue
            results = await asyncio.gather(*(self._post(client, config, m) for m in batch))
            acked = [m.ack_id for m, ok in zip(batch, results, strict=True) if ok]
            nacked = [m.ack_id for m, ok in zip(batch, results, strict=True) if not ok]
            if acked:
                await asyncio.to_thread(self._broker.acknowledge, subscription, acked)
            if nacked:
                await asyncio.to_thread(self._broker.modify_ack_deadline, subscription, nacked, 0)
                window.failed()
                await asyncio.sleep(window.pause)
            else:
                window.succeeded(self._max_outstanding)
            if self._on_delivered is not None:
                for message, ok in zip(batch, results, strict=True):
                    if ok:
                        outcome = self._on_delivered(message)
                        if outcome is not None:
                            await outcome

    async def _post(
        self, client: httpx.AsyncClient, config: SubscriptionConfig, message: ReceivedMessage
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
            response = await client.post(
                config.push_endpoint,
                content=json.dumps(body, separators=(",", ":")),
                headers=headers,
                timeout=config.ack_deadline_s,
            )
        except httpx.HTTPError:
            return False
        return response.status_code in ACK_STATUSES
