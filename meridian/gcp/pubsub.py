"""The Publisher and Subscriber ports on google-cloud-pubsub, and push-request decoding.

Works against Google and, with ``PUBSUB_EMULATOR_HOST``, against the embedded broker's gRPC front
end. Google's errors are translated to the core's at this boundary.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as gexc
from google.protobuf import timestamp_pb2

from meridian.domain.errors import (
    AlreadyExists,
    DecodeError,
    LimitExceeded,
    NotFound,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from meridian.ports import FlowControl, Message, Publisher, ReceivedMessage, Subscriber


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except gexc.NotFound as e:
        raise NotFound(e.message) from e
    except gexc.AlreadyExists as e:
        raise AlreadyExists(e.message) from e
    except (gexc.InvalidArgument, gexc.FailedPrecondition) as e:
        if "limit is" in str(e.message):
            raise LimitExceeded(e.message) from e
        raise ValidationError(e.message) from e
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError) as e:
        raise Unavailable(str(e)) from e


def _received(message: Any) -> ReceivedMessage:
    """A ReceivedMessage from a raw or client-library message (delivery_attempt None → 0)."""
    published = message.publish_time
    if not isinstance(published, datetime):
        published = published.ToDatetime(tzinfo=UTC)
    return ReceivedMessage(
        ack_id=message.ack_id,
        message_id=message.message_id,
        message=Message(bytes(message.data), dict(message.attributes), message.ordering_key),
        publish_time=published.astimezone(UTC),
        delivery_attempt=message.delivery_attempt or 0,
    )


class GcpPubSub(Publisher, Subscriber):
    """Publisher with batching and ordering enabled; streaming pull with flow control."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=1000, max_bytes=9 * 1000 * 1000, max_latency=0.005
            ),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self.subscriber = pubsub_v1.SubscriberClient()
        self._streamed: dict[str, Any] = {}
        self._lock = threading.Lock()

    def topic_path(self, topic: str) -> str:
        return self.publisher.topic_path(self.project, topic)

    def subscription_path(self, subscription: str) -> str:
        return self.subscriber.subscription_path(self.project, subscription)

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        path = self.topic_path(topic)
        with _translated():
            pending = [
                self.publisher.publish(
                    path, m.data, ordering_key=m.ordering_key, **dict(m.attributes)
                )
                for m in messages
            ]
            ids: list[str] = []
            for future, message in zip(pending, messages, strict=True):
                try:
                    ids.append(future.result())
                except Exception:
                    if message.ordering_key:
                        # The client blocks the key after a failure until resumed; the caller
                        # sees the error and may retry, so unblock it here.
                        self.publisher.resume_publish(path, message.ordering_key)
                    raise
            return ids

    def pull(self, subscription: str, max_messages: int = 100) -> list[ReceivedMessage]:
        with _translated(), warnings.catch_warnings():
            # return_immediately is deprecated, but a port-level pull must not block.
            warnings.simplefilter("ignore", DeprecationWarning)
            response = self.subscriber.pull(
                request={
                    "subscription": self.subscription_path(subscription),
                    "max_messages": max_messages,
                    "return_immediately": True,
                }
            )
        return [_received(_Flat(r)) for r in response.received_messages]

    def acknowledge(self, subscription: str, ack_ids: Iterable[str]) -> None:
        remote = []
        for ack_id in ack_ids:
            streamed = self._pop_streamed(ack_id)
            if streamed is not None:
                streamed.ack()
            else:
                remote.append(ack_id)
        if remote:
            with _translated():
                self.subscriber.acknowledge(
                    subscription=self.subscription_path(subscription), ack_ids=remote
                )

    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int) -> None:
        if not 0 <= seconds <= 600:
            raise ValidationError(f"ack deadline must be 0-600 seconds, not {seconds}")
        remote = []
        for ack_id in ack_ids:
            streamed = self._pop_streamed(ack_id) if seconds == 0 else None
            if streamed is not None:
                streamed.nack()
            else:
                remote.append(ack_id)
        if remote:
            with _translated():
                self.subscriber.modify_ack_deadline(
                    subscription=self.subscription_path(subscription),
                    ack_ids=remote,
                    ack_deadline_seconds=seconds,
                )

    def seek(self, subscription: str, to: datetime | str) -> None:
        request: dict[str, Any] = {"subscription": self.subscription_path(subscription)}
        if isinstance(to, str):
            request["snapshot"] = self.subscriber.snapshot_path(self.project, to)
        else:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(to.astimezone(UTC).replace(tzinfo=None))
            request["time"] = stamp
        with _translated():
            self.subscriber.seek(request=request)

    def create_snapshot(self, snapshot: str, subscription: str) -> None:
        with _translated():
            self.subscriber.create_snapshot(
                name=self.subscriber.snapshot_path(self.project, snapshot),
                subscription=self.subscription_path(subscription),
            )

    def _pop_streamed(self, ack_id: str) -> Any:
        with self._lock:
            return self._streamed.pop(ack_id, None)

    async def stream(
        self, subscription: str, flow: FlowControl = FlowControl()
    ) -> AsyncIterator[ReceivedMessage]:
        """The client library's streaming pull (lease management, ordered dispatch) bridged to
        an async iterator; ack or nack through this adapter with the message's ack id."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

        def on_message(message: Any) -> None:
            received = _received(message)
            with self._lock:
                self._streamed[received.ack_id] = message
            loop.call_soon_threadsafe(queue.put_nowait, received)

        future = self.subscriber.subscribe(
            self.subscription_path(subscription),
            on_message,
            flow_control=pubsub_v1.types.FlowControl(
                max_messages=flow.max_messages, max_bytes=flow.max_bytes
            ),
        )
        try:
            while True:
                if future.done():
                    with _translated():
                        future.result()
                yield await queue.get()
        finally:
            future.cancel()

    def close(self) -> None:
        self.publisher.stop()
        self.subscriber.close()


@dataclass(frozen=True)
class _Flat:
    """A raw ReceivedMessage seen with the client library's flat attribute names."""

    raw: Any

    def __getattr__(self, name: str) -> Any:
        if name in ("ack_id", "delivery_attempt"):
            return getattr(self.raw, name)
        return getattr(self.raw.message, name)


# Push requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushRequest:
    """A decoded push delivery: the message, its subscription and the verified token claims."""

    message: ReceivedMessage
    subscription: str
    claims: dict[str, Any]


def google_token_verifier(token: str, audience: str) -> dict[str, Any]:
    """Verify a Google-signed push token (production)."""
    from google.auth.transport import requests as g_requests
    from google.oauth2 import id_token

    try:
        claims: dict[str, Any] = id_token.verify_oauth2_token(
            token, g_requests.Request(), audience=audience
        )
    except ValueError as e:
        raise Unauthenticated(f"push token rejected: {e}") from None
    return claims


def decode_push_request(
    body: bytes,
    authorization: str | None,
    audience: str,
    verify: Callable[[str, str], dict[str, Any]] = google_token_verifier,
    expected_email: str | None = None,
) -> PushRequest:
    """Verify the bearer token and decode the wrapped envelope (reference §3.1, §3.4).

    Raises Unauthenticated for a missing or bad token and DecodeError for a malformed body. The
    verifier is ``google_token_verifier`` on GCP and ``PushTokenVerifier(...).verify`` embedded.
    """
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("push request without a bearer token")
    claims = verify(authorization.removeprefix("Bearer ").strip(), audience)
    if expected_email is not None and claims.get("email") != expected_email:
        raise Unauthenticated(f"push token is for {claims.get('email')!r}, not {expected_email!r}")
    try:
        envelope = json.loads(body)
        raw = envelope["message"]
        message_id = raw.get("messageId") or raw["message_id"]
        published = raw.get("publishTime") or raw["publish_time"]
        data = base64.b64decode(raw.get("data", ""), validate=True)
        received = ReceivedMessage(
            ack_id="",  # push messages are acked by the HTTP status, not by id
            message_id=message_id,
            message=Message(data, dict(raw.get("attributes") or {}), raw.get("orderingKey", "")),
            publish_time=datetime.fromisoformat(published.replace("Z", "+00:00")),
            delivery_attempt=int(envelope.get("deliveryAttempt", 0)),
        )
        return PushRequest(received, envelope["subscription"], claims)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise DecodeError(f"not a Pub/Sub push envelope: {e}") from None
