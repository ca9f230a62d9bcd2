"""The Pub/Sub gRPC API (google.pubsub.v1 Publisher and Subscriber) over the embedded broker.

The official client, Beam's ``ReadFromPubSub`` and ``gcloud`` reach it with
``PUBSUB_EMULATOR_HOST``. Handlers are registered generically on the protobuf classes shipped in
google-cloud-pubsub, so no code is generated. The emulator serves one project's namespace: the
project part of resource names is accepted and echoed, not separated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.pubsub_v1.types import pubsub as types

from meridian.domain.errors import (
    AlreadyExists,
    LimitExceeded,
    MeridianError,
    NotFound,
    Unavailable,
    ValidationError,
)
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig, TopicConfig
from meridian.ports import Message, ReceivedMessage

Empty = empty_pb2.Empty
STREAM_IDLE_S = 0.05


def _short(name: str, kind: str) -> str:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != kind or not parts[3]:
        raise ValidationError(f"invalid {kind[:-1]} name {name!r}: want projects/P/{kind}/NAME")
    return parts[3]


def _project(name: str) -> str:
    return name.split("/")[1] if name.startswith("projects/") else "meridian-local"


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + duration.nanos / 1e9


def _duration(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))


def _status(error: MeridianError) -> grpc.StatusCode:
    if isinstance(error, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, AlreadyExists):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(error, LimitExceeded | ValidationError):
        if "FAILED_PRECONDITION" in str(error):
            return grpc.StatusCode.FAILED_PRECONDITION
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, Unavailable):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _guarded(fn: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    """Translate the core's errors into gRPC status codes at the boundary."""

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request, context)
        except MeridianError as e:
            context.abort(_status(e), str(e))

    return handler


class PubSubService:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    # Conversions ----------------------------------------------------------------------------

    def _topic_pb(self, config: TopicConfig, project: str) -> Any:
        return types.Topic.pb()(
            name=f"projects/{project}/topics/{config.name}",
            message_retention_duration=_duration(config.message_retention_s),
        )

    def _subscription_pb(self, config: SubscriptionConfig, project: str) -> Any:
        sub = types.Subscription.pb()(
            name=f"projects/{project}/subscriptions/{config.name}",
            topic=f"projects/{project}/topics/{config.topic}",
            filter=config.filter,
            ack_deadline_seconds=config.ack_deadline_s,
            message_retention_duration=_duration(config.message_retention_s),
            enable_message_ordering=config.ordering,
        )
        if config.dead_letter_topic:
            sub.dead_letter_policy.dead_letter_topic = (
                f"projects/{project}/topics/{config.dead_letter_topic}"
            )
            sub.dead_letter_policy.max_delivery_attempts = config.max_delivery_attempts
        if config.retry:
            sub.retry_policy.minimum_backoff.CopyFrom(_duration(config.retry.minimum_backoff_s))
            sub.retry_policy.maximum_backoff.CopyFrom(_duration(config.retry.maximum_backoff_s))
        if config.push_endpoint:
            sub.push_config.push_endpoint = config.push_endpoint
            if config.push_service_account:
                sub.push_config.oidc_token.service_account_email = config.push_service_account
                sub.push_config.oidc_token.audience = config.push_audience or ""
        if config.bigquery_table:
            sub.bigquery_config.table = f"{project}.{config.bigquery_table}"
            sub.bigquery_config.write_metadata = config.bigquery_write_metadata
        return sub

    def _subscription_config(self, sub: Any) -> SubscriptionConfig:
        retry = None
        if sub.HasField("retry_policy"):
            policy = sub.retry_policy
            retry = RetryPolicy(
                _seconds(policy.minimum_backoff) if policy.HasField("minimum_backoff") else 10.0,
                _seconds(policy.maximum_backoff) if policy.HasField("maximum_backoff") else 600.0,
            )
        dead_letter = (
            sub.dead_letter_policy.dead_letter_topic if sub.HasField("dead_letter_policy") else ""
        )
        push = sub.push_config if sub.HasField("push_config") else None
        table = sub.bigquery_config.table if sub.HasField("bigquery_config") else ""
        return SubscriptionConfig(
            name=_short(sub.name, "subscriptions"),
            topic=_short(sub.topic, "topics"),
            filter=sub.filter,
            ack_deadline_s=sub.ack_deadline_seconds,
            message_retention_s=_seconds(sub.message_retention_duration),
            ordering=sub.enable_message_ordering,
            dead_letter_topic=_short(dead_letter, "topics") if dead_letter else None,
            max_delivery_attempts=sub.dead_letter_policy.max_delivery_attempts,
            retry=retry,
            push_endpoint=push.push_endpoint or None if push else None,
            push_service_account=(push.oidc_token.service_account_email or None) if push else None,
            push_audience=(push.oidc_token.audience or None) if push else None,
            bigquery_table=".".join(table.split(".")[-2:]) if table else None,
            bigquery_write_metadata=sub.bigquery_config.write_metadata,
        )

    def _received_pb(self, message: ReceivedMessage) -> Any:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(message.publish_time.astimezone(UTC).replace(tzinfo=None))
        return types.ReceivedMessage.pb()(
            ack_id=message.ack_id,
            message=types.PubsubMessage.pb()(
                data=message.message.data,
                attributes=dict(message.message.attributes),
                message_id=message.message_id,
                publish_time=stamp,
                ordering_key=message.message.ordering_key,
            ),
            delivery_attempt=message.delivery_attempt,
        )

    # Publisher ------------------------------------------------------------------------------

    def create_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        retention = (
            _seconds(request.message_retention_duration)
            if request.HasField("message_retention_duration")
            else None
        )
        config = self.broker.create_topic(_short(request.name, "topics"), retention)
        return self._topic_pb(config, _project(request.name))

    def get_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._topic_pb(
            self.broker.get_topic(_short(request.topic, "topics")), _project(request.topic)
        )

    def update_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._topic_pb(
            self.broker.get_topic(_short(request.topic.name, "topics")),
            _project(request.topic.name),
        )

    def list_topics(self, request: Any, context: grpc.ServicerContext) -> Any:
        project = request.project.split("/")[-1]
        return types.ListTopicsResponse.pb()(
            topics=[self._topic_pb(t, project) for t in self.broker.list_topics()]
        )

    def list_topic_subscriptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        project = _project(request.topic)
        subs = self.broker.list_subscriptions(_short(request.topic, "topics"))
        return types.ListTopicSubscriptionsResponse.pb()(
            subscriptions=[f"projects/{project}/subscriptions/{s.name}" for s in subs]
        )

    def delete_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.broker.delete_topic(_short(request.topic, "topics"))
        return Empty()

    def publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        messages = [Message(m.data, dict(m.attributes), m.ordering_key) for m in request.messages]
        ids = self.broker.publish(_short(request.topic, "topics"), messages)
        return types.PublishResponse.pb()(message_ids=ids)

    # Subscriber -----------------------------------------------------------------------------

    def create_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        config = self.broker.create_subscription(self._subscription_config(request))
        return self._subscription_pb(config, _project(request.name))

    def get_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = request.subscription
        return self._subscription_pb(
            self.broker.get_subscription(_short(name, "subscriptions")), _project(name)
        )

    def update_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        wanted = self._subscription_config(request.subscription)
        current = self.broker.get_subscription(wanted.name)
        changes: dict[str, Any] = {}
        for path in request.update_mask.paths:
            field = {
                "ack_deadline_seconds": "ack_deadline_s",
                "message_retention_duration": "message_retention_s",
                "dead_letter_policy": "dead_letter_topic",
                "retry_policy": "retry",
                "push_config": "push_endpoint",
            }.get(path, path)
            if field == "dead_letter_topic":
                changes["max_delivery_attempts"] = wanted.max_delivery_attempts
            if field == "push_endpoint":
                changes["push_service_account"] = wanted.push_service_account
                changes["push_audience"] = wanted.push_audience
            if not hasattr(current, field):
                raise ValidationError(f"update_mask path {path!r} cannot be updated")
            changes[field] = getattr(wanted, field)
        updated = self.broker.update_subscription(replace(current, **changes))
        return self._subscription_pb(updated, _project(request.subscription.name))

    def list_subscriptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        project = request.project.split("/")[-1]
        return types.ListSubscriptionsResponse.pb()(
            subscriptions=[
                self._subscription_pb(s, project) for s in self.broker.list_subscriptions()
            ]
        )

    def delete_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.broker.delete_subscription(_short(request.subscription, "subscriptions"))
        return Empty()

    def modify_push_config(self, request: Any, context: grpc.ServicerContext) -> Any:
        current = self.broker.get_subscription(_short(request.subscription, "subscriptions"))
        push = request.push_config
        self.broker.update_subscription(
            replace(
                current,
                push_endpoint=push.push_endpoint or None,
                push_service_account=push.oidc_token.service_account_email or None,
                push_audience=push.oidc_token.audience or None,
            )
        )
        return Empty()

    def pull(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = _short(request.subscription, "subscriptions")
        max_messages = request.max_messages or 100
        received = self.broker.pull(name, max_messages)
        if not received and not request.return_immediately:
            # Long-poll briefly, as the service does, rather than spin the client.
            self.broker.wait(1.0)
            received = self.broker.pull(name, max_messages)
        return types.PullResponse.pb()(received_messages=[self._received_pb(m) for m in received])

    def acknowledge(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.broker.acknowledge(_short(request.subscription, "subscriptions"), request.ack_ids)
        return Empty()

    def modify_ack_deadline(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.broker.modify_ack_deadline(
            _short(request.subscription, "subscriptions"),
            request.ack_ids,
            request.ack_deadline_seconds,
        )
        return Empty()

    def streaming_pull(
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        try:
            first = next(requests)
        except StopIteration:
            return
        try:
            name = _short(first.subscription, "subscriptions")
            self.broker.get_subscription(name)
            if not 10 <= first.stream_ack_deadline_seconds <= 600:
                raise ValidationError("stream_ack_deadline_seconds must be 10-600")
        except MeridianError as e:
            context.abort(_status(e), str(e))
        stream = _Stream(self.broker, name, first)
        reader = threading.Thread(target=stream.read, args=(requests, context), daemon=True)
        reader.start()
        while context.is_active() and not stream.closed.is_set():
            room = stream.room()
            batch = self.broker.pull(name, min(room, 100)) if room > 0 else []
            if not batch:
                self.broker.wait(STREAM_IDLE_S)
                continue
            stream.handed_out(batch)
            yield types.StreamingPullResponse.pb()(
                received_messages=[self._received_pb(m) for m in batch]
            )

    def create_snapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = self.broker.create_snapshot(
            _short(request.name, "snapshots"), _short(request.subscription, "subscriptions")
        )
        return self._snapshot_pb(info.name, info.topic, info.expire_time, _project(request.name))

    def _snapshot_pb(self, name: str, topic: str, expire: float, project: str) -> Any:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(datetime.fromtimestamp(expire, UTC).replace(tzinfo=None))
        return types.Snapshot.pb()(
            name=f"projects/{project}/snapshots/{name}",
            topic=f"projects/{project}/topics/{topic}",
            expire_time=stamp,
        )

    def get_snapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        wanted = _short(request.snapshot, "snapshots")
        for info in self.broker.list_snapshots():
            if info.name == wanted:
                return self._snapshot_pb(
                    info.name, info.topic, info.expire_time, _project(request.snapshot)
                )
        raise NotFound(f"snapshot {wanted} not found")

    def list_snapshots(self, request: Any, context: grpc.ServicerContext) -> Any:
        project = request.project.split("/")[-1]
        return types.ListSnapshotsResponse.pb()(
            snapshots=[
                self._snapshot_pb(i.name, i.topic, i.expire_time, project)
                for i in self.broker.list_snapshots()
            ]
        )

    def delete_snapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.broker.delete_snapshot(_short(request.snapshot, "snapshots"))
        return Empty()

    def seek(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = _short(request.subscription, "subscriptions")
        if request.WhichOneof("target") == "snapshot":
            self.broker.seek(name, _short(request.snapshot, "snapshots"))
        else:
            self.broker.seek(name, request.time.ToDatetime(tzinfo=UTC))
        return types.SeekResponse.pb()()


class _Stream:
    """One StreamingPull stream: applies the client's acks and deadline changes as they arrive
    and bounds what is outstanding by the client's flow control."""

    def __init__(self, broker: Broker, subscription: str, first: Any) -> None:
        self.broker = broker
        self.subscription = subscription
        self.max_messages = first.max_outstanding_messages or 1000
        self.max_bytes = first.max_outstanding_bytes or 100 * 1024 * 1024
        self.outstanding: dict[str, int] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.apply(first)

    def room(self) -> int:
        with self.lock:
            if sum(self.outstanding.values()) >= self.max_bytes:
                return 0
            return self.max_messages - len(self.outstanding)

    def handed_out(self, batch: list[ReceivedMessage]) -> None:
        with self.lock:
            for m in batch:
                self.outstanding[m.ack_id] = len(m.message.data)

    def apply(self, request: Any) -> None:
        if len(request.modify_deadline_seconds) != len(request.modify_deadline_ack_ids):
            raise ValidationError("modify_deadline_seconds and modify_deadline_ack_ids differ")
        if request.ack_ids:
            self.broker.acknowledge(self.subscription, request.ack_ids)
            self._forget(request.ack_ids)
        by_seconds: dict[int, list[str]] = {}
        for seconds, ack_id in zip(
            request.modify_deadline_seconds, request.modify_deadline_ack_ids, strict=True
        ):
            if seconds < 0:
                raise ValidationError("modify_deadline_seconds must not be negative")
            by_seconds.setdefault(min(seconds, 600), []).append(ack_id)
        for seconds, ack_ids in by_seconds.items():
            self.broker.modify_ack_deadline(self.subscription, ack_ids, seconds)
            if seconds == 0:
                self._forget(ack_ids)

    def _forget(self, ack_ids: Any) -> None:
        with self.lock:
            for ack_id in ack_ids:
                self.outstanding.pop(ack_id, None)

    def read(self, requests: Iterator[Any], context: grpc.ServicerContext) -> None:
        try:
            for request in requests:
                self.apply(request)
        except MeridianError as e:
            context.abort(_status(e), str(e))
        except Exception:  # the client went away; the stream ends below
            pass
        finally:
            self.closed.set()


def _handlers(service: PubSubService) -> list[grpc.GenericRpcHandler]:
    def unary(fn: Callable[[Any, grpc.ServicerContext], Any], request: Any, response: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            _guarded(fn),
            request_deserializer=request.pb().FromString,
            response_serializer=response.SerializeToString
            if response is Empty
            else response.pb().SerializeToString,
        )

    t = types
    publisher = {
        "CreateTopic": unary(service.create_topic, t.Topic, t.Topic),
        "UpdateTopic": unary(service.update_topic, t.UpdateTopicRequest, t.Topic),
        "Publish": unary(service.publish, t.PublishRequest, t.PublishResponse),
        "GetTopic": unary(service.get_topic, t.GetTopicRequest, t.Topic),
        "ListTopics": unary(service.list_topics, t.ListTopicsRequest, t.ListTopicsResponse),
        "ListTopicSubscriptions": unary(
            service.list_topic_subscriptions,
            t.ListTopicSubscriptionsRequest,
            t.ListTopicSubscriptionsResponse,
        ),
        "DeleteTopic": unary(service.delete_topic, t.DeleteTopicRequest, Empty),
    }
    subscriber = {
        "CreateSubscription": unary(service.create_subscription, t.Subscription, t.Subscription),
        "GetSubscription": unary(
            service.get_subscription, t.GetSubscriptionRequest, t.Subscription
        ),
        "UpdateSubscription": unary(
            service.update_subscription, t.UpdateSubscriptionRequest, t.Subscription
        ),
        "ListSubscriptions": unary(
            service.list_subscriptions, t.ListSubscriptionsRequest, t.ListSubscriptionsResponse
        ),
        "DeleteSubscription": unary(
            service.delete_subscription, t.DeleteSubscriptionRequest, Empty
        ),
        "ModifyAckDeadline": unary(service.modify_ack_deadline, t.ModifyAckDeadlineRequest, Empty),
        "Acknowledge": unary(service.acknowledge, t.AcknowledgeRequest, Empty),
        "Pull": unary(service.pull, t.PullRequest, t.PullResponse),
        "StreamingPull": grpc.stream_stream_rpc_method_handler(
            service.streaming_pull,
            request_deserializer=t.StreamingPullRequest.pb().FromString,
            response_serializer=t.StreamingPullResponse.pb().SerializeToString,
        ),
        "ModifyPushConfig": unary(service.modify_push_config, t.ModifyPushConfigRequest, Empty),
        "GetSnapshot": unary(service.get_snapshot, t.GetSnapshotRequest, t.Snapshot),
        "ListSnapshots": unary(
            service.list_snapshots, t.ListSnapshotsRequest, t.ListSnapshotsResponse
        ),
        "CreateSnapshot": unary(service.create_snapshot, t.CreateSnapshotRequest, t.Snapshot),
        "DeleteSnapshot": unary(service.delete_snapshot, t.DeleteSnapshotRequest, Empty),
        "Seek": unary(service.seek, t.SeekRequest, t.SeekResponse),
    }
    return [
        grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
        grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
    ]


def serve(
    broker: Broker, host: str = "127.0.0.1", port: int = 8085, workers: int = 32
) -> tuple[grpc.Server, int]:
    """Start the server (non-blocking); returns it and the bound port (``port=0`` picks one)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers(_handlers(PubSubService(broker)))
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise Unavailable(f"cannot listen on {host}:{port}")
    server.start()
    return server, bound
