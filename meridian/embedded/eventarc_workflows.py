"""The embedded Eventarc: Pub/Sub triggers whose destination is a workflow (the catalog's
``workflow_triggers``).

Like Eventarc's Pub/Sub trigger, it keeps a subscription of its own on the trigger's topic
(``eventarc-<trigger>``), and for each message starts an execution of the workflow with the
message's CloudEvent (``google.cloud.pubsub.topic.v1.messagePublished``, reference §5.6) as the
argument: ``data.message`` holds the base64 ``data``, the ``attributes``, ``messageId`` and
``publishTime`` (each also in its snake_case spelling, as Eventarc sends both), and
``data.subscription`` the subscription's name. The message is acknowledged once the execution is
started; a start that fails leaves it to be redelivered with backoff. The execution's id derives
from the message id, so a redelivered message finds its execution instead of starting a second
one (Cloud Workflows gives each start a fresh id: there a redelivery would run twice, which the
sync jobs, idempotent, tolerate).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meridian.catalog import Catalog, WorkflowTriggerSpec
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig
from meridian.observability import get_logger
from meridian.ports import ReceivedMessage, WorkflowExecutions

log = get_logger(__name__)

EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
TRANSPORT_RETENTION_S = 24 * 3600


def subscription_name(trigger: str) -> str:
    return f"eventarc-{trigger}"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cloudevent(
    received: ReceivedMessage, topic: str, subscription: str, project: str
) -> dict[str, Any]:
    """The CloudEvent Eventarc hands a workflow for one Pub/Sub message, as JSON."""
    published = _time(received.publish_time)
    message = received.message
    return {
        "specversion": "1.0",
        "id": received.message_id,
        "source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "type": EVENT_TYPE,
        "datacontenttype": "application/json",
        "time": published,
        "data": {
            "message": {
                "data": base64.b64encode(message.data).decode(),
                "attributes": dict(message.attributes),
                "messageId": received.message_id,
                "message_id": received.message_id,
                "publishTime": published,
                "publish_time": published,
            },
            "subscription": f"projects/{project}/subscriptions/{subscription}",
        },
    }


def execution_id(trigger: str, message_id: str) -> str:
    digest = hashlib.sha256(f"{trigger}\x1f{message_id}".encode()).hexdigest()[:24]
    return f"{trigger}-{digest}"


@dataclass(frozen=True)
class _Trigger:
    name: str
    spec: WorkflowTriggerSpec

    @property
    def subscription(self) -> str:
        return subscription_name(self.name)


class WorkflowTriggers:
    """Every workflow trigger of the catalog, delivering into ``executions``; runs in the
    platform process beside the Firestore triggers (``meridian.embedded.eventarc``)."""

    def __init__(
        self,
        catalog: Catalog,
        broker: Broker,
        executions: WorkflowExecutions,
        retry: RetryPolicy = RetryPolicy(10.0, 600.0),
    ) -> None:
        self._triggers = [_Trigger(n, s) for n, s in catalog.workflow_triggers.items()]
        self._broker = broker
        self._executions = executions
        self._retry = retry
        self._stopping = asyncio.Event()

    def ensure_subscriptions(self) -> None:
        for trigger in self._triggers:
            self._broker.create_subscription(
                SubscriptionConfig(
                    name=trigger.subscription,
                    topic=trigger.spec.topic,
                    ack_deadline_s=60,
                    message_retention_s=TRANSPORT_RETENTION_S,
                    retry=self._retry,
                ),
                exist_ok=True,
            )

    def deliver_once(self, limit: int = 100) -> int:
        """Start an execution for each message due on every trigger; returns how many started."""
        started = 0
        for trigger in self._triggers:
            received = self._broker.pull(trigger.subscription, limit)
            done, failed = [], []
            for m in received:
                argument = cloudevent(
                    m, trigger.spec.topic, trigger.subscription, self._broker.project
                )
                try:
                    self._executions.start(
                        trigger.spec.workflow, argument, execution_id(trigger.name, m.message_id)
                    )
                except Exception as e:  # the message is redelivered with backoff
                    log.warning(
                        "eventarc could not start the workflow",
                        trigger=trigger.name,
                        workflow=trigger.spec.workflow,
                        error=str(e),
                    )
                    failed.append(m.ack_id)
                    continue
                done.append(m.ack_id)
            if done:
                self._broker.acknowledge(trigger.subscription, done)
                started += len(done)
            if failed:
                self._broker.modify_ack_deadline(trigger.subscription, failed, 0)
        return started

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, idle_s: float = 0.2) -> None:
        self.ensure_subscriptions()
        while not self._stopping.is_set():
            started = await asyncio.to_thread(self.deliver_once)
            if not started:
                waited = asyncio.create_task(asyncio.to_thread(self._broker.wait, idle_s))
                stopping = asyncio.create_task(self._stopping.wait())
                await asyncio.wait({waited, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                await waited
