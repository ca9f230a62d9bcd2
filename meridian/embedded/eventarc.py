"""The embedded Eventarc: Firestore triggers from the document store's change log.

Like Eventarc, it has two halves joined by a Pub/Sub transport (reference §5.6):

1. the **forwarder** tails the change log with one durable cursor per trigger and, for each
   committed write that matches the trigger's document pattern and event type, publishes the
   ready-to-send CloudEvent (``DocumentEventData`` protobuf body, ``ce-*`` attributes) to the
   trigger's transport topic, then advances the cursor: a change is forwarded if and only if it
   committed, at least once;
2. the **deliverer** pulls the transport subscription and POSTs each event to the destination in
   CloudEvents binary mode with an OIDC token, acking on 2xx; anything else is retried with
   backoff (10 s to 600 s, as Eventarc) for the transport's 24-hour retention.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from google.events.cloud import firestore as fs

from meridian.catalog import Catalog, TriggerSpec
from meridian.domain.events import derive_event_id
from meridian.embedded.docstore import Change, ChangesExpired, EmbeddedDocumentStore
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig
from meridian.firestore_values import timestamp, to_fields
from meridian.observability import get_logger
from meridian.ports import Message

log = get_logger(__name__)

TRANSPORT_RETENTION_S = 24 * 3600
ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
DATASCHEMA = "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto"


def eventarc_service_account(project: str) -> str:
    return f"eventarc-trigger@{project}.iam.gserviceaccount.com"


def transport_name(trigger: str) -> str:
    return f"eventarc-{trigger}"


def path_pattern(document: str) -> re.Pattern[str]:
    """``parcels/{parcelId}`` → a regex matching exactly that shape of document path."""
    parts = [r"[^/]+" if p.startswith("{") else re.escape(p) for p in document.split("/")]
    return re.compile("^" + "/".join(parts) + "$")


@dataclass(frozen=True)
class Trigger:
    name: str
    spec: TriggerSpec
    pattern: re.Pattern[str]
    kind: str  # created, updated, deleted or written

    @classmethod
    def of(cls, name: str, spec: TriggerSpec) -> Trigger:
        return cls(name, spec, path_pattern(spec.document), spec.event_type.rsplit(".", 1)[1])

    def matches(self, change: Change) -> bool:
        if not self.pattern.match(change.path):
            return False
        if change.kind == "updated" and change.old_data == change.new_data:
            return False  # no-op writes produce no event (reference §5.1)
        return self.kind in ("written", change.kind)


def document_event(change: Change, project: str) -> fs.DocumentEventData:
    """The change as Eventarc's Firestore payload: value, old value and update mask."""
    name = f"projects/{project}/databases/(default)/documents/{change.path}"
    create_time = timestamp(change.create_time or change.commit_time)

    def document(data: dict[str, object], update_time: datetime) -> fs.Document:
        return fs.Document(
            name=name,
            fields=to_fields(data),
            create_time=create_time,
            update_time=timestamp(update_time),
        )

    event = fs.DocumentEventData()
    if change.new_data is not None:
        event.value = document(change.new_data, change.commit_time)
    if change.old_data is not None:
        event.old_value = document(change.old_data, change.create_time or change.commit_time)
    if change.kind == "updated":
        event.update_mask = fs.DocumentMask(field_paths=list(change.update_mask))
    return event


def cloudevent_attributes(
    trigger: Trigger, change: Change, project: str, location: str
) -> dict[str, str]:
    kind = trigger.kind if trigger.kind == "written" else change.kind
    micros = int(change.commit_time.timestamp() * 1_000_000)
    return {
        "ce-specversion": "1.0",
        "ce-id": derive_event_id("eventarc", trigger.name, change.path, str(micros), change.kind)[
            4:
        ],
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/(default)",
        "ce-type": f"google.cloud.firestore.document.v1.{kind}",
        "ce-subject": f"documents/{change.path}",
        "ce-time": change.commit_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "ce-dataschema": DATASCHEMA,
        "ce-database": "(default)",
        "ce-namespace": "(default)",
        "ce-document": change.path,
        "ce-location": location,
        "ce-project": project,
        "content-type": "application/protobuf",
    }


class EventarcEmulation:
    """Forwarder and deliverer for every trigger of the catalog; runs in the platform process."""

    def __init__(
        self,
        catalog: Catalog,
        store: EmbeddedDocumentStore,
        broker: Broker,
        issuer: TokenIssuer,
        destination: Callable[[str, str], str],
        retry: RetryPolicy = RetryPolicy(10.0, 600.0),
        location: str = "local",
    ) -> None:
        self._triggers = [Trigger.of(name, spec) for name, spec in catalog.triggers.items()]
        self._store = store
        self._broker = broker
        self._issuer = issuer
        self._destination = destination
        self._retry = retry
        self._location = location
        self._project = broker.project
        self._stopping = asyncio.Event()

    def ensure_transport(self) -> None:
        for trigger in self._triggers:
            name = transport_name(trigger.name)
            self._broker.create_topic(name, TRANSPORT_RETENTION_S, exist_ok=True)
            self._broker.create_subscription(
                SubscriptionConfig(
                    name=name,
                    topic=name,
                    ack_deadline_s=60,
                    message_retention_s=TRANSPORT_RETENTION_S,
                    retry=self._retry,
                ),
                exist_ok=True,
            )

    def forward_once(self, limit: int = 500) -> int:
        """Forward the next committed changes of every trigger; returns how many were forwarded."""
        forwarded = 0
        for trigger in self._triggers:
            cursor = transport_name(trigger.name)
            try:
                changes = self._store.changes.read_changes(cursor, limit)
            except ChangesExpired as gap:
                log.error(
                    "eventarc cursor fell behind the change log; changes were lost",
                    trigger=trigger.name,
                    after=gap.after_seq,
                    first_retained=gap.first_seq,
                )
                self._store.changes.advance(cursor, gap.first_seq - 1)
                continue
            if not changes:
                continue
            messages = [
                Message(
                    data=fs.DocumentEventData.serialize(document_event(c, self._project)),
                    attributes=cloudevent_attributes(trigger, c, self._project, self._location),
                )
                for c in changes
                if trigger.matches(c)
            ]
            for start in range(0, len(messages), 1000):
                self._broker.publish(cursor, messages[start : start + 1000])
            self._store.changes.advance(cursor, changes[-1].seq)
            forwarded += len(messages)
        return forwarded

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, idle_s: float = 0.02) -> None:
        self.ensure_transport()
        async with httpx.AsyncClient() as client:
            loops = [asyncio.create_task(self._forward_loop(idle_s))]
            loops += [asyncio.create_task(self._deliver_loop(client, t)) for t in self._triggers]
            await self._stopping.wait()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _forward_loop(self, idle_s: float) -> None:
        while True:
            if not await asyncio.to_thread(self.forward_once):
                await asyncio.sleep(idle_s)

    async def _deliver_loop(self, client: httpx.AsyncClient, trigger: Trigger) -> None:
        subscription = transport_name(trigger.name)
        url = self._destination(trigger.spec.service, trigger.spec.path)
        while True:
            batch = await asyncio.to_thread(self._broker.pull, subscription, 32)
            if not batch:
                await asyncio.to_thread(self._broker.wait, 0.2)
                continue
            token = self._issuer.token(url, eventarc_service_account(self._project))
            results = await asyncio.gather(
                *(self._post(client, url, token, m.message) for m in batch)
            )
            acked = [m.ack_id for m, ok in zip(batch, results, strict=True) if ok]
            nacked = [m.ack_id for m, ok in zip(batch, results, strict=True) if not ok]
            if acked:
                await asyncio.to_thread(self._broker.acknowledge, subscription, acked)
            if nacked:
                await asyncio.to_thread(self._broker.modify_ack_deadline, subscription, nacked, 0)

    async def _post(
        self, client: httpx.AsyncClient, url: str, token: str, message: Message
    ) -> bool:
        headers = {**message.attributes, "authorization": f"Bearer {token}"}
        try:
            response = await client.post(url, content=message.data, headers=headers, timeout=60)
        except httpx.HTTPError as e:
            log.warning("eventarc delivery failed", url=url, error=str(e))
            return False
        if response.status_code not in ACK_STATUSES:
            log.warning("eventarc delivery refused", url=url, status=response.status_code)
        return response.status_code in ACK_STATUSES
