"""The ports: what services need from infrastructure, never how it is provided.

Each port has an embedded adapter (``meridian/embedded``) and a Google adapter (``meridian/gcp``),
and one contract suite in ``tests/contract/`` that both must pass. Adapters raise only the core's
errors (``meridian.domain.errors``), translated at the boundary.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from meridian.domain.actors import Actor
from meridian.domain.errors import ValidationError
from meridian.domain.model import GeoPoint as GeoPoint  # the ports take the domain's point

T = TypeVar("T")

# Document store ----------------------------------------------------------------------------------

JsonValue = Any  # JSON-compatible values plus datetime
Operator = Literal["==", "!=", "<", "<=", ">", ">=", "in"]


@dataclass(frozen=True)
class Document:
    """A document at ``path`` (``collection/id[/subcollection/id…]``)."""

    path: str
    data: Mapping[str, JsonValue]
    create_time: datetime
    update_time: datetime

    @property
    def id(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Query:
    """A query on one collection, built fluently: ``Query("parcels").where("status", "==", "CREATED")``."""

    collection: str
    filters: tuple[tuple[str, Operator, JsonValue], ...] = ()
    orders: tuple[tuple[str, Literal["asc", "desc"]], ...] = ()
    limit_to: int | None = None

    def where(self, field_path: str, op: Operator, value: JsonValue) -> Query:
        return Query(
            self.collection, (*self.filters, (field_path, op, value)), self.orders, self.limit_to
        )

    def order_by(self, field_path: str, direction: Literal["asc", "desc"] = "asc") -> Query:
        return Query(
            self.collection, self.filters, (*self.orders, (field_path, direction)), self.limit_to
        )

    def limit(self, count: int) -> Query:
        return Query(self.collection, self.filters, self.orders, count)


@dataclass(frozen=True)
class DocumentChange:
    """One change seen by a listener: ``kind`` is added, modified or removed."""

    kind: Literal["added", "modified", "removed"]
    document: Document | None
    path: str


@dataclass(frozen=True)
class Snapshot:
    """What a listener yields: the full current result, and what changed since the last one.

    The first snapshot lists every document as ``added``; a listener that fell too far behind is
    given a fresh full snapshot (``resync=True``) rather than silently skipping changes.
    """

    documents: tuple[Document, ...]
    changes: tuple[DocumentChange, ...]
    read_time: datetime
    resync: bool = False


class Transaction(abc.ABC):
    """Reads first, then buffered writes, committed atomically when the transaction function returns."""

    @abc.abstractmethod
    def get(self, path: str) -> Document | None: ...

    @abc.abstractmethod
    def query(self, query: Query) -> list[Document]: ...

    @abc.abstractmethod
    def create(self, path: str, data: Mapping[str, JsonValue]) -> None:
        """Commit fails with AlreadyExists if the document exists."""

    @abc.abstractmethod
    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> None: ...

    @abc.abstractmethod
    def update(self, path: str, fields: Mapping[str, JsonValue]) -> None:
        """Dotted field paths; commit fails with NotFound if the document does not exist."""

    @abc.abstractmethod
    def delete(self, path: str) -> None: ...


class DocumentStore(abc.ABC):
    """Firestore's semantics (reference §7): documents by path, create-if-absent, merge, field-path
    updates, serializable transactions retried on contention (5 attempts, then
    TransactionContention), single-collection queries, TTL expiry, listeners across processes.

    Limits are enforced with LimitExceeded: 1 MiB per document, path rules (even segment count,
    no empty segment, no ``.``/``..`` ids, ids ≤ 1,500 bytes).
    """

    @abc.abstractmethod
    def get(self, path: str) -> Document | None: ...

    def get_all(self, paths: Sequence[str]) -> dict[str, Document | None]:
        """Each of ``paths`` → its document, or None where there is none (Firestore's
        ``get_all``: one batched read, not a query, so it needs no index)."""
        return {path: self.get(path) for path in dict.fromkeys(paths)}

    @abc.abstractmethod
    def create(self, path: str, data: Mapping[str, JsonValue]) -> Document:
        """Raises AlreadyExists if a document is at ``path``."""

    @abc.abstractmethod
    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> Document: ...

    @abc.abstractmethod
    def update(self, path: str, fields: Mapping[str, JsonValue]) -> Document:
        """Raises NotFound if no document is at ``path``."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Deleting a missing document is not an error."""

    @abc.abstractmethod
    def query(self, query: Query) -> list[Document]: ...

    @abc.abstractmethod
    def run_transaction(self, function: Callable[[Transaction], T], max_attempts: int = 5) -> T:
        """Run ``function`` in a transaction, re-running it on contention; its writes commit
        atomically when it returns, and none commit if it raises."""

    @abc.abstractmethod
    def batch_write(
        self, writes: Sequence[tuple[str, str, Mapping[str, JsonValue] | None]]
    ) -> None:
        """Apply (op, path, data) writes atomically, op in create/set/merge/update/delete."""

    @abc.abstractmethod
    def watch_document(self, path: str) -> AsyncIterator[Snapshot]: ...

    @abc.abstractmethod
    def watch_query(self, query: Query) -> AsyncIterator[Snapshot]: ...


# Messaging ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A Pub/Sub message as published: Avro body, string attributes, optional ordering key."""

    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    ordering_key: str = ""


@dataclass(frozen=True)
class ReceivedMessage:
    """A delivered message. ``delivery_attempt`` is 0 when the subscription has no dead-letter policy."""

    ack_id: str
    message_id: str
    message: Message
    publish_time: datetime
    delivery_attempt: int = 0


@dataclass(frozen=True)
class FlowControl:
    max_messages: int = 1000
    max_bytes: int = 100 * 1024 * 1024


class Publisher(abc.ABC):
    """Publishes to a topic. Returns only once the broker holds the message durably (an
    acknowledged publish is never lost). Limits per reference §2.8 raise LimitExceeded."""

    @abc.abstractmethod
    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        """Publish a batch; returns the server-assigned message ids, in order."""


class Subscriber(abc.ABC):
    """At-least-once delivery with Pub/Sub's semantics (reference §2): ack deadlines, nack
    (= deadline 0), retry backoff, dead-lettering after max attempts, ordering keys, seek."""

    @abc.abstractmethod
    def pull(self, subscription: str, max_messages: int = 100) -> list[ReceivedMessage]: ...

    @abc.abstractmethod
    def acknowledge(self, subscription: str, ack_ids: Iterable[str]) -> None: ...

    @abc.abstractmethod
    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int) -> None:
        """0 ≤ seconds ≤ 600; 0 is a nack."""

    def nack(self, subscription: str, ack_ids: Iterable[str]) -> None:
        self.modify_ack_deadline(subscription, ack_ids, 0)

    @abc.abstractmethod
    def stream(
        self, subscription: str, flow: FlowControl = FlowControl()
    ) -> AsyncIterator[ReceivedMessage]:
        """Streaming pull: never more than ``flow`` outstanding (delivered, not acked) messages."""

    @abc.abstractmethod
    def seek(self, subscription: str, to: datetime | str) -> None:
        """Seek to a time (earlier messages become acked, later unacked) or to a snapshot name."""

    @abc.abstractmethod
    def create_snapshot(self, snapshot: str, subscription: str) -> None: ...


# Identity ----------------------------------------------------------------------------------------


class IdentityVerifier(abc.ABC):
    """Turns a bearer token into an Actor; raises Unauthenticated for a bad or expired token."""

    @abc.abstractmethod
    def verify(self, token: str) -> Actor: ...


class PushAuthenticator(abc.ABC):
    """Checks the OIDC token on a push request (Pub/Sub push, Eventarc) against the identity that
    may call this endpoint; raises Unauthenticated or PermissionDenied."""

    @abc.abstractmethod
    def check(self, authorization: str | None, audience: str) -> None: ...


class OidcTokenVerifier(abc.ABC):
    """Verifies an OIDC ID token's signature, issuer, audience and expiry against its issuer's
    published keys; returns its claims, or raises Unauthenticated."""

    @abc.abstractmethod
    def verify(self, token: str, audience: str) -> dict[str, Any]: ...


# Warehouse and workflows -------------------------------------------------------------------------


_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


def check_table_name(table: str) -> None:
    """The Warehouse port's naming rule, enforced alike by every adapter: ``dataset.table``."""
    if not _TABLE_NAME.match(table):
        raise ValidationError(f"table {table!r} must be named dataset.table")


class Warehouse(abc.ABC):
    """BigQuery's role: append rows to day-partitioned tables and run SQL over them.

    A table is named ``dataset.table`` and exists once rows have been appended to it. A row is a
    mapping of column to value: str, int, float, bool, bytes, None or datetime (naive datetimes
    are taken as UTC). Rows are partitioned by the UTC day of their ``publish_time`` column (the
    day of the append when they have none), as a BigQuery subscription's table is; the partition
    is not a column of its own.
    """

    @abc.abstractmethod
    def append_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``rows`` (none: nothing happens); once this returns, every query sees them.
        Appends may bring new columns: rows without a column read it as None. Raises
        ValidationError for a table not named ``dataset.table``."""

    @abc.abstractmethod
    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run ``sql`` (the SQL both engines read alike: SELECT with WHERE, GROUP BY, ORDER BY,
        CAST, COUNT, ANY_VALUE; tables named ``dataset.table``) with ``$name`` placeholders bound
        from ``parameters``; returns the rows as column → value, values typed as appended
        (timestamps as UTC-aware datetimes). Raises NotFound for a table that does not exist and
        ValidationError for SQL the engine refuses (syntax, unknown column, a missing
        parameter)."""

    @abc.abstractmethod
    def json_text(self, column: str, key: str) -> str:
        """An SQL expression for the string at top-level ``key`` of the JSON object in
        ``column`` (JSON text or a JSON column), NULL where it has none: the one place the two
        engines' SQL differs (JSON functions), so a query that reads into JSON stays one text."""


@dataclass(frozen=True)
class Execution:
    """A workflow execution, shaped like Workflow Executions: ``state`` is ACTIVE, SUCCEEDED,
    FAILED or CANCELLED; ``result`` / ``error`` are set when it ends."""

    execution_id: str
    workflow: str
    state: Literal["ACTIVE", "SUCCEEDED", "FAILED", "CANCELLED"]
    argument: Mapping[str, Any]
    start_time: datetime
    end_time: datetime | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None


class WorkflowExecutions(abc.ABC):
    """Start and follow executions of a workflow definition; deliver callbacks by URL."""

    @abc.abstractmethod
    def start(
        self, workflow: str, argument: Mapping[str, Any], execution_id: str | None = None
    ) -> Execution:
        """Start ``workflow`` with ``argument``; the execution is returned ACTIVE, under
        ``execution_id`` (or an id the engine chooses). Starting with an ``execution_id`` that
        already exists returns that execution, with its first argument, and starts nothing.
        Raises NotFound for an unknown workflow."""

    @abc.abstractmethod
    def get(self, execution_id: str) -> Execution:
        """Raises NotFound for an id never started."""

    @abc.abstractmethod
    def list(self, workflow: str, state: str | None = None) -> list[Execution]:
        """The executions of ``workflow`` (none of another), only those in ``state`` if given."""

    @abc.abstractmethod
    def cancel(self, execution_id: str) -> Execution:
        """Cancel an ACTIVE execution: it ends CANCELLED with an end time. One that has already
        ended is returned as it ended. Raises NotFound for an id never started."""

    @abc.abstractmethod
    def send_callback(self, callback_url: str, body: Mapping[str, Any]) -> None:
        """Deliver a callback; one sent before the workflow awaits it is kept until it does
        (a second one while the first is unreceived raises Conflict). Raises NotFound when the
        endpoint or its execution is gone or has ended."""


# External systems --------------------------------------------------------------------------------
# Every call that changes something outside takes an idempotency key, so a redelivered event can
# call again without a second effect.


@dataclass(frozen=True)
class SmsReceipt:
    message_id: str
    accepted_at: datetime


class SmsGateway(abc.ABC):
    """An SMS provider: sends a text message once per idempotency key."""

    @abc.abstractmethod
    def send(self, to: str, body: str, idempotency_key: str) -> SmsReceipt:
        """Send ``body`` to ``to``. The same key never sends twice: a repeat returns the first
        receipt's ``message_id`` and sends nothing. Raises Unavailable when the gateway fails or
        times out (the caller's message is retried, under the same key: a send that timed out
        may have gone out, and its retry then sends nothing more)."""


@dataclass(frozen=True)
class Charge:
    client_id: str
    reference: str
    amount_minor: int
    currency: str
    description: str


class BillingApi(abc.ABC):
    """A client's billing API: posts billable events once per idempotency key."""

    @abc.abstractmethod
    def charge(self, charge: Charge, idempotency_key: str) -> str:
        """Post a billable event and return the client's charge id. The same key never charges
        twice: a repeat returns the first charge's id. Raises Unavailable when the API fails or
        times out (retried under the same key, which then charges at most once)."""


@dataclass(frozen=True)
class WebhookResponse:
    """An endpoint's answer: header names in lower case; ``body`` at most its first 4 KiB."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


class WebhookSender(abc.ABC):
    """POSTs to client webhook endpoints."""

    @abc.abstractmethod
    def send(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> WebhookResponse:
        """One HTTP POST of ``body`` with ``headers``; whatever status the endpoint answers is
        returned, never raised. Redirects are not followed (a 3xx comes back with its
        ``location``: a redirect could lead where the caller's address check would refuse).
        Raises Unavailable when no answer comes: connection refused or broken, or nothing
        within ``timeout_s``."""


class TravelTime(abc.ABC):
    """Driving time between two points."""

    @abc.abstractmethod
    def seconds(self, origin: GeoPoint, destination: GeoPoint, depart_at: datetime) -> float:
        """Seconds to drive from ``origin`` to ``destination`` setting off at ``depart_at`` (aware;
        one in the past is taken as now where the provider needs a future time): positive and
        finite between two different points, 0 from a point to itself, and roughly symmetric
        (the way back within a factor of 1.5 of the way there). Raises Unavailable when the
        provider fails or times out."""


@dataclass(frozen=True)
class RoutingProblem:
    """A capacitated VRP with time windows, starting at ``starts_at`` (aware) from ``depot``.

    Each stop has ``id``, ``lat``, ``lng``, ``weight_kg``, ``window_start`` and ``window_end``
    (aware datetimes); each vehicle has ``id``, ``capacity_kg`` and ``capacity_parcels``.
    """

    depot: GeoPoint
    stops: Sequence[Mapping[str, Any]]
    vehicles: Sequence[Mapping[str, Any]]
    starts_at: datetime


@dataclass(frozen=True)
class RoutingSolution:
    """``routes``: one per vehicle used, ``{"vehicle_id", "stops", "duration_s"}``, its stops
    ``{"id", "sequence", "eta"}`` in visiting order (sequence from 0, eta an aware datetime
    inside the stop's window), within the vehicle's weight and parcel capacity. ``unserved``:
    ``{"id", "reason"}`` for each stop no route serves."""

    routes: Sequence[Mapping[str, Any]]
    unserved: Sequence[Mapping[str, Any]]
    cost: float
    solve_seconds: float


class RouteOptimizer(abc.ABC):
    """Plans a dispatch window's routes."""

    @abc.abstractmethod
    def solve(self, problem: RoutingProblem, time_limit_s: float) -> RoutingSolution:
        """Best solution found within the time limit. Every stop appears exactly once, in a
        route or in ``unserved`` with a reason (too heavy for any vehicle, a window closed
        before ``starts_at``, no vehicle or capacity left): never dropped. Raises
        ValidationError for a time limit that is not positive, Unavailable when the optimizer
        fails or finds no solution in time."""


class BlobStore(abc.ABC):
    """Binary objects (proof-of-delivery photos) stored under a key."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store ``data`` under ``key`` (a relative ``/``-separated path; putting a key again
        replaces its data) and return its reference (``file://…`` embedded, ``gs://…`` on
        GCP). Raises ValidationError for a key that is empty, absolute or has a ``..`` part."""

    @abc.abstractmethod
    def get(self, reference: str) -> bytes:
        """The data last put at ``reference``. Raises NotFound for a reference never put, or
        not one of this store's."""

    @abc.abstractmethod
    def exists(self, reference: str) -> bool:
        """Whether ``get(reference)`` would find data (False for another store's reference)."""
