"""In-memory fakes of the ports for unit tests. Each subclasses the real port."""

from __future__ import annotations

import builtins
import copy
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from meridian.domain.errors import AlreadyExists, Conflict, NotFound
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

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a is not None and a != b,
    "<": lambda a, b: a is not None and a < b,
    "<=": lambda a, b: a is not None and a <= b,
    ">": lambda a, b: a is not None and a > b,
    ">=": lambda a, b: a is not None and a >= b,
    "in": lambda a, b: a in b,
}


def _field(data: Mapping[str, Any], field_path: str) -> Any:
    value: Any = data
    for part in field_path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _set_path(target: dict[str, Any], field_path: str, value: Any) -> None:
    *parents, last = field_path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = copy.deepcopy(value)


class FakeDocumentStore(DocumentStore):
    """Dict-backed store; a transaction applies its buffered writes only if the function returns."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.docs: dict[str, Document] = {}
        self.clock = clock
        self.commits = 0

    def get(self, path: str) -> Document | None:
        return self.docs.get(path)

    def _apply(self, op: str, path: str, data: Mapping[str, JsonValue] | None) -> Document | None:
        now = self.clock()
        existing = self.docs.get(path)
        if op == "create" and existing is not None:
            raise AlreadyExists(path)
        if op == "update" and existing is None:
            raise NotFound(path)
        if op == "delete":
            self.docs.pop(path, None)
            return None
        if op == "merge" and existing is not None:
            body = copy.deepcopy(dict(existing.data))
            _merge(body, data or {})
        elif op == "update" and existing is not None:
            body = copy.deepcopy(dict(existing.data))
            for field_path, value in (data or {}).items():
                _set_path(body, field_path, value)
        else:
            body = copy.deepcopy(dict(data or {}))
        created = existing.create_time if existing else now
        self.docs[path] = Document(path, body, created, now)
        return self.docs[path]

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
        snapshot = dict(self.docs)
        try:
            results = [self._apply(op, path, data) for op, path, data in writes]
        except Exception:
            self.docs = snapshot
            raise
        self.commits += 1
        return results

    def batch_write(
        self, writes: Sequence[tuple[str, str, Mapping[str, JsonValue] | None]]
    ) -> None:
        self._commit(writes)

    def query(self, query: Query) -> list[Document]:
        prefix = query.collection + "/"
        found = [
            d
            for p, d in self.docs.items()
            if p.startswith(prefix)
            and "/" not in p[len(prefix) :]
            and all(_OPS[op](_field(d.data, f), v) for f, op, v in query.filters)
        ]
        for field_path, direction in reversed(query.orders):
            found.sort(key=lambda d: _field(d.data, field_path), reverse=direction == "desc")
        return found[: query.limit_to] if query.limit_to is not None else found

    def run_transaction(self, function: Callable[[Transaction], T], max_attempts: int = 5) -> T:
        tx = _FakeTransaction(self)
        result = function(tx)
        self._commit(tx.writes)
        return result

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

    def get(self, path: str) -> Document | None:
        assert not self.writes, "Firestore transactions read before they write"
        return self.store.get(path)

    def query(self, query: Query) -> list[Document]:
        assert not self.writes, "Firestore transactions read before they write"
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
    """Workflows executions in memory: start is idempotent per execution id, a second callback
    to the same URL is refused as the engine refuses it."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
        self.executions: dict[str, Execution] = {}
        self.callbacks: list[tuple[str, Mapping[str, Any]]] = []
        self.queued: set[str] = set()

    def start(
        self, workflow: str, argument: Mapping[str, Any], execution_id: str | None = None
    ) -> Execution:
        assert execution_id is not None
        return self.executions.setdefault(
            execution_id, Execution(execution_id, workflow, "ACTIVE", dict(argument), self.now)
        )

    def get(self, execution_id: str) -> Execution:
        if execution_id not in self.executions:
            raise NotFound(execution_id)
        return self.executions[execution_id]

    def list(self, workflow: str, state: str | None = None) -> builtins.list[Execution]:
        return list(self.executions.values())

    def cancel(self, execution_id: str) -> Execution:
        return self.executions[execution_id]

    def send_callback(self, callback_url: str, body: Mapping[str, Any]) -> None:
        if callback_url in self.queued:
            raise Conflict("already queued")  # what the engine answers (429) to a second send
        self.queued.add(callback_url)
        self.callbacks.append((callback_url, body))
