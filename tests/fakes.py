"""In-memory fakes of the ports for unit tests. Each subclasses the real port."""

from __future__ import annotations

import builtins
import itertools
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from meridian.app.dispatch_records import WORKFLOW as DISPATCH_WORKFLOW
from meridian.documents import query as documents_query
from meridian.documents.paths import check_document, check_document_path
from meridian.documents.query import check_query
from meridian.documents.values import apply_merge, apply_update, clone
from meridian.domain.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    TransactionContention,
    ValidationError,
)
from meridian.ports import (
    Document,
    DocumentStore,
    Execution,
    FlowControl,
    JsonValue,
    Message,
    Publisher,
    Query,
    ReceivedMessage,
    Snapshot,
    Subscriber,
    Transaction,
    WorkflowExecutions,
)

T = TypeVar("T")


def _stored(value: Any) -> Any:
    """What a store keeps of a written value: a copy, timestamps in UTC (naive ones taken as UTC,
    as the Firestore client does), tuples as lists."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, Mapping):
        return {k: _stored(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stored(v) for v in value]
    return value


class FakeDocumentStore(DocumentStore):
    """Dict-backed store held to the DocumentStore contract (tests/contract/test_docstore_fake.py):
    the same path, field, size and query rules as the adapters (``meridian.documents``), and a
    transaction applies its buffered writes only if the function returns. Transactions run one at
    a time, so they are serializable; ``contended_attempts`` makes that many attempts fail with
    contention first (None: every attempt), to exercise a caller's retry. No listeners."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.docs: dict[str, Document] = {}
        self.clock = clock
        self.commits = 0
        self.contended_attempts: int | None = 0
        self._lock = threading.RLock()

    def another_client(self) -> FakeDocumentStore:
        """A second client of the same documents (what another process would open)."""
        other = FakeDocumentStore(self.clock)
        other.docs, other._lock = self.docs, self._lock
        return other

    def get(self, path: str) -> Document | None:
        check_document_path(path)
        document = self.docs.get(path)
        return None if document is None else replace(document, data=clone(document.data))

    def _apply(self, op: str, path: str, data: Mapping[str, JsonValue] | None) -> Document | None:
        check_document_path(path)
        if op in ("create", "set", "merge"):
            if data is None:
                raise ValidationError(f"a {op} of {path} needs a mapping of fields")
            check_document(path, data)
        elif op != "delete" and op != "update":
            raise ValidationError(f"unknown write operation {op!r}")
        now = self.clock()
        existing = self.docs.get(path)
        if op == "create" and existing is not None:
            raise AlreadyExists(path)
        if op == "update" and existing is None:
            raise NotFound(path)
        if op == "delete":
            self.docs.pop(path, None)
            return None
        fields = _stored(data or {})
        if op == "merge" and existing is not None:
            body = apply_merge(existing.data, fields)
        elif op == "update" and existing is not None:
            body = apply_update(existing.data, fields)
            check_document(path, body)
        else:
            body = fields
        created = existing.create_time if existing else now
        self.docs[path] = Document(path, body, created, now)
        return replace(self.docs[path], data=clone(body))

    def create(self, path: str, data: Mapping[str, JsonValue]) -> Document:
        return self._commit([("create", path, data)])[0]  # type: ignore[return-value]

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> Document:
        return self._commit([("merge" if merge else "set", path, data)])[0]  # type: ignore[return-value]

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> Document:
        return self._commit([("update", path, fields)])[0]  # type: ignore[return-value]

    def delete(self, path: str) -> None:
        self._commit([("delete", path, None)])

    def _commit(
        self, writes: Sequence[tuple[str, str, Mapping[str, JsonValue] | None]]
    ) -> list[Document | None]:
        with self._lock:
            snapshot = dict(self.docs)
            try:
                results = [self._apply(op, path, data) for op, path, data in writes]
            except Exception:
                self.docs.clear()
                self.docs.update(snapshot)
                raise
            self.commits += 1
            return results

    def batch_write(
        self, writes: Sequence[tuple[str, str, Mapping[str, JsonValue] | None]]
    ) -> None:
        self._commit(writes)

    def query(self, query: Query) -> list[Document]:
        check_query(query)
        prefix = query.collection + "/"
        candidates = [
            d for p, d in self.docs.items() if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]
        return [replace(d, data=clone(d.data)) for d in documents_query.run(query, candidates)]

    def run_transaction(self, function: Callable[[Transaction], T], max_attempts: int = 5) -> T:
        with self._lock:
            for _ in range(max_attempts):
                tx = _FakeTransaction(self)
                result = function(tx)
                if self.contended_attempts is None or self.contended_attempts > 0:
                    if self.contended_attempts is not None:
                        self.contended_attempts -= 1
                    continue  # as if another transaction had won: run the function again
                self._commit(tx.writes)
                return result
        raise TransactionContention(
            f"transaction gave up after {max_attempts} attempts: too much contention"
        )

    async def watch_document(self, path: str) -> AsyncIterator[Snapshot]:
        raise NotImplementedError("the fake store has no listeners; use the embedded store")
        yield  # pragma: no cover

    async def watch_query(self, query: Query) -> AsyncIterator[Snapshot]:
        raise NotImplementedError("the fake store has no listeners; use the embedded store")
        yield  # pragma: no cover


class _FakeTransaction(Transaction):
    def __init__(self, store: FakeDocumentStore) -> None:
        self.store = store
        self.writes: list[tuple[str, str, Mapping[str, JsonValue] | None]] = []

    def _before_any_write(self) -> None:
        if self.writes:
            raise ValidationError("a transaction must do all its reads before any write")

    def get(self, path: str) -> Document | None:
        self._before_any_write()
        return self.store.get(path)

    def query(self, query: Query) -> list[Document]:
        self._before_any_write()
        return self.store.query(query)

    def create(self, path: str, data: Mapping[str, JsonValue]) -> None:
        self.writes.append(("create", path, data))

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> None:
        self.writes.append(("merge" if merge else "set", path, data))

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> None:
        self.writes.append(("update", path, fields))

    def delete(self, path: str) -> None:
        self.writes.append(("delete", path, None))


class FakePublisher(Publisher):
    def __init__(self) -> None:
        self.published: list[tuple[str, Message]] = []
        self._ids = itertools.count(1)
        self.fail_with: Exception | None = None

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        if self.fail_with is not None:
            raise self.fail_with
        self.published.extend((topic, m) for m in messages)
        return [str(next(self._ids)) for _ in messages]


class FakeSubscriber(Subscriber):
    """Hands out the messages given to ``deliver`` from ``stream`` (which ends when they run out)
    and records acks and nacks."""

    def __init__(self) -> None:
        self.queued: list[ReceivedMessage] = []
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self._ids = itertools.count(1)

    def deliver(self, message: Message) -> str:
        ack_id = f"ack-{next(self._ids)}"
        self.queued.append(ReceivedMessage(ack_id, ack_id, message, datetime.now(UTC)))
        return ack_id

    def pull(self, subscription: str, max_messages: int = 100) -> list[ReceivedMessage]:
        batch, self.queued = self.queued[:max_messages], self.queued[max_messages:]
        return batch

    def acknowledge(self, subscription: str, ack_ids: Iterable[str]) -> None:
        self.acked.extend(ack_ids)

    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int) -> None:
        if seconds == 0:
            self.nacked.extend(ack_ids)

    async def stream(
        self, subscription: str, flow: FlowControl = FlowControl()
    ) -> AsyncIterator[ReceivedMessage]:
        while self.queued:
            yield self.queued.pop(0)

    def seek(self, subscription: str, to: datetime | str) -> None:
        raise NotImplementedError

    def create_snapshot(self, snapshot: str, subscription: str) -> None:
        raise NotImplementedError


class FakeWorkflows(WorkflowExecutions):
    """Workflow executions in memory, held to the WorkflowExecutions contract
    (tests/contract/test_workflow_executions.py). ``workflows`` are the deployed definitions (the
    project's by default). It runs no workflow: callbacks are recorded and kept (a second one to
    a URL still unreceived is refused, as the engine refuses it) until ``receive_callbacks``
    plays a workflow that awaits its callback and returns the body."""

    def __init__(
        self, now: datetime | None = None, workflows: Iterable[str] = (DISPATCH_WORKFLOW,)
    ) -> None:
        self.now = now or datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
        self.workflows = frozenset(workflows)
        self.executions: dict[str, Execution] = {}
        self.callbacks: list[tuple[str, Mapping[str, Any]]] = []
        self.queued: set[str] = set()
        self._ids = itertools.count(1)

    def start(
        self, workflow: str, argument: Mapping[str, Any], execution_id: str | None = None
    ) -> Execution:
        if workflow not in self.workflows:
            raise NotFound(f"workflow {workflow}")
        execution_id = execution_id or f"{workflow}-{next(self._ids)}"
        return self.executions.setdefault(
            execution_id, Execution(execution_id, workflow, "ACTIVE", dict(argument), self.now)
        )

    def get(self, execution_id: str) -> Execution:
        if execution_id not in self.executions:
            raise NotFound(execution_id)
        return self.executions[execution_id]

    def list(self, workflow: str, state: str | None = None) -> builtins.list[Execution]:
        return [
            e
            for e in self.executions.values()
            if e.workflow == workflow and (state is None or e.state == state)
        ]

    def cancel(self, execution_id: str) -> Execution:
        execution = self.get(execution_id)
        if execution.state == "ACTIVE":
            execution = replace(execution, state="CANCELLED", end_time=self.now)
            self.executions[execution_id] = execution
        return execution

    def send_callback(self, callback_url: str, body: Mapping[str, Any]) -> None:
        execution_id = _callback_execution(callback_url)
        if execution_id in self.executions and self.executions[execution_id].state != "ACTIVE":
            raise NotFound(f"execution {execution_id} has ended")
        if callback_url in self.queued:
            raise Conflict("already queued")  # what the engine answers (429) to a second send
        self.queued.add(callback_url)
        self.callbacks.append((callback_url, body))

    def receive_callbacks(self) -> None:
        """Each execution with an unreceived callback (its URL ``…/callbacks/<execution id>/…``)
        receives it and succeeds with its body as the result."""
        for url, body in self.callbacks:
            execution_id = _callback_execution(url)
            if url in self.queued and execution_id in self.executions:
                self.queued.discard(url)
                self.executions[execution_id] = replace(
                    self.executions[execution_id],
                    state="SUCCEEDED",
                    end_time=self.now,
                    result=dict(body),
                )


def _callback_execution(callback_url: str) -> str | None:
    """The execution id in a callback URL of the engine's shape, if it is one."""
    found = re.search(r"/callbacks/([^/]+)/", callback_url)
    return found.group(1) if found else None
