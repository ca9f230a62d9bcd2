"""The embedded Eventarc: Firestore triggers from the document store's change log.

It tails the change log of the store the triggers' collections belong to (the command
service's, ``parcels/`` and ``shipments/``), opened read-only, and keeps its cursors in a
database of its own (``changelog.Cursors``), so forwarding never takes the command's write lock.

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
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from google.events.cloud import firestore as fs

from meridian.catalog import Catalog, TriggerSpec
from meridian.codec.firestore_values import encode_document_event
from meridian.config import Settings
from meridian.documents.ownership import Ownership
from meridian.domain.errors import CatalogError
from meridian.domain.events import derive_event_id
from meridian.embedded.docstore import Change, ChangesExpired, EmbeddedDocumentStore, changelog
from meridian.embedded.docstore.changelog import ChangeLog, Cursors
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig
from meridian.embedded.pubsub.push import (
    Answers,
    Changes,
    IdlePoll,
    idle_wait_s,
    next_due,
    worth_pulling,
)
from meridian.observability import get_logger
from meridian.ports import Message
from meridian.wire.pool import Http1Pool, PostFailed

log = get_logger(__name__)

TRANSPORT_RETENTION_S = 24 * 3600
CURSORS_FILE = "eventarc.sqlite3"  # in the data directory: the forwarder's cursors, apart
ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
DATASCHEMA = "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto"


def transport_name(trigger: str) -> str:
    return f"eventarc-{trigger}"


def tailed_store(catalog: Catalog) -> str:
    """The store whose change log is tailed: the one holding every trigger's collection."""
    ownership = Ownership.of(catalog)
    stores = {ownership.store_of(t.document) for t in catalog.triggers.values()}
    if len(stores) != 1 or None in stores:
        raise CatalogError(
            f"{catalog.path}: the triggers' collections must all be in one store (stores:), "
            f"not in {sorted(map(str, stores))}"
        )
    (store,) = stores
    assert store is not None
    return store


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
    return fs.DocumentEventData.deserialize(document_event_bytes(change, project))


def document_event_bytes(change: Change, project: str) -> bytes:
    """``document_event`` serialized by the Firestore value mapping
    (``meridian.codec.firestore_values``, on the raw protobuf messages: the forwarder encodes
    every forwarded change, and that mapping's speed is what keeps it cheap)."""
    return encode_document_event(
        f"projects/{project}/databases/(default)/documents/{change.path}",
        value=change.new_data,
        old_value=change.old_data,
        create_time=change.create_time or change.commit_time,
        update_time=change.commit_time,
        old_update_time=change.create_time or change.commit_time,
        update_mask=change.update_mask if change.kind == "updated" else None,
    )


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
        identity: str | None = None,
        cursors: Cursors | None = None,
    ) -> None:
        """``store``: the store whose change log is tailed (read-only is enough when ``cursors``
        are kept elsewhere; by default they are in ``store`` itself). ``identity``: the identity
        deliveries sign with (the platform passes ``Settings.eventarc_identity``; by default, the
        broker's project's as ``Settings`` names it)."""
        self._triggers = [Trigger.of(name, spec) for name, spec in catalog.triggers.items()]
        self._store = store
        self._cursors: Cursors | ChangeLog = cursors if cursors is not None else store.changes
        self._broker = broker
        self._issuer = issuer
        self._destination = destination
        self._retry = retry
        self._location = location
        self._project = broker.project
        self._identity = identity or Settings(project=broker.project).eventarc_identity
        self._stopping = asyncio.Event()
        self._changes = Changes(broker)
        self._log: sqlite3.Connection | None = None
        # The collections the triggers watch; None if a pattern has a wildcard collection.
        parents = [spec.document.rsplit("/", 1)[0] for spec in catalog.triggers.values()]
        self._collections = None if any("{" in p for p in parents) else sorted(set(parents))

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
        return self._forward(limit)[1]

    def _forward(self, limit: int) -> tuple[int, int]:
        """(change-log sequences read past, CloudEvents forwarded) over every trigger."""
        read = forwarded = 0
        # Triggers whose cursors stand at the same place share one read, and the read decodes
        # only the changes of the collections some trigger watches: decoding every change (the
        # reactors' route boards, status views and ledgers, whole documents old and new) was the
        # forwarder's main cost, for changes no trigger wanted.
        batches: dict[int | None, tuple[int, int, list[Change]]] = {}
        for trigger in self._triggers:
            cursor = transport_name(trigger.name)
            position = self._cursors.position(cursor)
            try:
                if position not in batches:
                    batches[position] = self._read_watched(position, limit, cursor)
                after, upto, changes = batches[position]
            except ChangesExpired as gap:
                log.error(
                    "eventarc cursor fell behind the change log; changes were lost",
                    trigger=trigger.name,
                    after=gap.after_seq,
                    first_retained=gap.first_seq,
                )
                self._cursors.advance(cursor, gap.first_seq - 1)
                continue
            if upto <= after:
                continue
            read = max(read, upto - after)
            messages = [
                Message(
                    data=document_event_bytes(c, self._project),
                    attributes=cloudevent_attributes(trigger, c, self._project, self._location),
                )
                for c in changes
                if trigger.matches(c)
            ]
            for start in range(0, len(messages), 1000):
                self._broker.publish(cursor, messages[start : start + 1000])
            self._cursors.advance(cursor, upto)
            forwarded += len(messages)
        return read, forwarded

    def _read_watched(
        self, position: int | None, limit: int, cursor: str
    ) -> tuple[int, int, list[Change]]:
        """(after, upto, changes): the changes of the watched collections with a sequence in
        ``(after, upto]``, where ``after`` is the cursor's position (a new cursor starts at the
        oldest retained change) and ``upto`` at most ``limit`` past it. ChangesExpired if
        retention pruned changes the cursor had not read."""
        if self._log is None:
            self._log = self._store.connect()  # the forwarder's own; used by one thread at a time
        conn = self._log
        conn.execute("BEGIN")  # one read transaction: the gap check and the rows agree
        try:
            if position is None:
                first = changelog.first_retained_seq(conn)
                after = (first - 1) if first is not None else changelog.max_seq(conn)
            else:
                after = position
            upto = min(changelog.latest_after(conn, after, cursor), after + limit)
            sql = f"{changelog.SELECT} WHERE seq > ? AND seq <= ?"
            params: list[Any] = [after, upto]
            if self._collections is not None:
                sql += f" AND collection IN ({', '.join('?' * len(self._collections))})"
                params += self._collections
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        finally:
            conn.execute("COMMIT")
        return after, upto, [changelog.row_to_change(r) for r in rows]

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, idle_s: float = 0.01) -> None:
        self.ensure_transport()
        loops = [asyncio.create_task(self._forward_loop(idle_s))]
        loops += [asyncio.create_task(self._deliver_loop(t)) for t in self._triggers]
        await self._stopping.wait()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    async def _forward_loop(self, idle_s: float, limit: int = 500) -> None:
        # The document store's data_version, read on this loop's own connection, changes with
        # every commit of another connection: while it stands still there is nothing new to
        # forward, and the loop does not hand a read to a thread every ``idle_s`` for nothing.
        watch = self._store.connect()
        forwarded_at: int | None = None
        while True:
            (version,) = watch.execute("PRAGMA data_version").fetchone()
            if version == forwarded_at:
                await asyncio.sleep(idle_s)
                continue
            # A full batch (even of other collections' changes, which forward nothing) says more
            # is waiting: read again at once. Otherwise pause, so that under load each round
            # carries many changes: every round advances each trigger's cursor, a write
            # transaction (on the cursors' own database, off the command's write path).
            read, _ = await asyncio.to_thread(self._forward, limit)
            if read < limit:
                forwarded_at = version
                await asyncio.sleep(idle_s)

    async def _deliver_loop(self, trigger: Trigger, concurrency: int = 32) -> None:
        # Each trigger has its own pool of the lean HTTP/1.1 client (see push._deliver).
        client = Http1Pool(concurrency)
        try:
            await self._deliver_with(client, trigger, concurrency)
        finally:
            await client.aclose()

    async def _deliver_with(self, client: Http1Pool, trigger: Trigger, concurrency: int) -> None:
        """Keep up to ``concurrency`` deliveries in flight, topping up as each one answers (not in
        lock-step batches, where the slowest request of each batch held back the next); idle, it
        reads when its next message is due rather than pulling, and waits for a change or for
        that time (see ``push.PushDispatcher._deliver_with``)."""
        subscription = transport_name(trigger.name)
        url = self._destination(trigger.spec.service, trigger.spec.path)
        in_flight: dict[asyncio.Task[bool], str] = {}
        answers = Answers()
        idle = IdlePoll()
        try:
            while True:
                pulled: int | None = None
                looked, due = self._changes.version(), None
                if worth_pulling(concurrency - len(in_flight), concurrency, len(in_flight)):
                    due = next_due(self._broker, subscription)
                if due is not None and due <= self._broker.clock():
                    room = concurrency - len(in_flight)
                    batch = await asyncio.to_thread(self._broker.pull, subscription, room)
                    pulled = len(batch)
                    token = self._issuer.token(url, self._identity)
                    for m in batch:
                        post = asyncio.create_task(self._post(client, url, token, m.message))
                        in_flight[post] = m.ack_id
                        answers.track(post)
                pause = idle.after(pulled)
                if not in_flight:
                    if pulled is None:  # nothing due: until a change, or the next one falls due
                        await self._changes.wait(looked, idle_wait_s(due, self._broker.clock()))
                    else:
                        await asyncio.sleep(pause)
                    continue
                timeout = None if len(in_flight) >= concurrency else pause
                done = await answers.wait(timeout)
                acked = [in_flight[t] for t in done if t.result()]
                nacked = [in_flight[t] for t in done if not t.result()]
                for t in done:
                    del in_flight[t]
                if acked:
                    await asyncio.to_thread(self._broker.acknowledge, subscription, acked)
                if nacked:
                    await asyncio.to_thread(
                        self._broker.modify_ack_deadline, subscription, nacked, 0
                    )
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _post(self, client: Http1Pool, url: str, token: str, message: Message) -> bool:
        headers = {**message.attributes, "authorization": f"Bearer {token}"}
        try:
            status = await client.post(url, message.data, headers, 60)
        except PostFailed as e:
            log.warning("eventarc delivery failed", url=url, error=str(e))
            return False
        if status not in ACK_STATUSES:
            log.warning("eventarc delivery refused", url=url, status=status)
        return status in ACK_STATUSES
