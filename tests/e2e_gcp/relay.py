"""The push relay: what Pub/Sub's push delivery does, over Google's emulator.

The emulator can push, but unsigned, so the catalog's push subscriptions are created as pull ones
(``topology.py``) and this relay pulls each (the official client's streaming pull) and POSTs every
message to its reactor as Pub/Sub would: the wrapped JSON envelope (reference §3.1), an OIDC token
for the push identity with the endpoint as audience, an ack on 102/200/201/202/204 and a nack
(redelivery) on anything else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
import httpx

from tests.e2e_gcp.signing import LocalSigner

ACK_STATUSES = frozenset({102, 200, 201, 202, 204})


def envelope(message: Any, subscription_path: str) -> bytes:
    """Pub/Sub's wrapped push body for a message of the client library."""
    published = message.publish_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "messageId": message.message_id,
            "message_id": message.message_id,
            "publishTime": published,
            "publish_time": published,
        },
        "subscription": subscription_path,
    }
    if message.ordering_key:
        body["message"]["orderingKey"] = message.ordering_key
    if message.delivery_attempt:
        body["deliveryAttempt"] = message.delivery_attempt
    return json.dumps(body).encode()


class PushRelay:
    """Pulls subscriptions of ``project`` and pushes their messages, signed as ``identity``."""

    def __init__(self, project: str, signer: LocalSigner, identity: str) -> None:
        self._project = project
        self._signer = signer
        self._identity = identity
        self._subscriber = pubsub_v1.SubscriberClient()
        self._http = httpx.Client(timeout=60)
        self._futures: list[Any] = []
        self.statuses: list[tuple[str, int]] = []  # (subscription, status) of every push

    def relay(self, subscription: str, endpoint: str) -> None:
        """Push ``subscription``'s messages to ``endpoint`` from now on."""
        path = self._subscriber.subscription_path(self._project, subscription)
        token = self._signer.oidc_token(endpoint, self._identity)
        self._futures.append(
            self._subscriber.subscribe(path, self._pusher(subscription, path, endpoint, token))
        )

    def _pusher(
        self, subscription: str, path: str, endpoint: str, token: str
    ) -> Callable[[Any], None]:
        def push(message: Any) -> None:
            try:
                status = self._http.post(
                    endpoint,
                    content=envelope(message, path),
                    headers={
                        "authorization": f"Bearer {token}",
                        "content-type": "application/json",
                    },
                ).status_code
            except httpx.HTTPError:
                status = 0
            self.statuses.append((subscription, status))
            if status in ACK_STATUSES:
                message.ack()
            else:
                message.nack()

        return push

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._subscriber.close()
        self._http.close()
