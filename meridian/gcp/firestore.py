"""The DocumentStore on Google Cloud Firestore (``google-cloud-firestore``).

Google's errors are translated into the core's at this boundary. A transaction that Firestore
aborts (lock contention: ABORTED, on a read or at commit) is re-run after an exponential backoff
with full jitter, as Google's clients pace their retries (``Backoff``), and raises
TransactionContention only once its attempts are spent. ``on_snapshot`` listeners, which call
back on a background thread, are bridged to async iterators. The naming and size rules are
checked before sending, with the same code as the embedded store (``meridian.documents``), so
both refuse the same documents with the same errors.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers as firestore_helpers
from google.cloud.firestore_v1.base_query import FieldFilter

from meridian.documents.paths import (
    check_collection_path,
    check_document,
    check_document_path,
)
from meridian.documents.query import check_query
from meridian.domain.errors import (
    AlreadyExists,
    LimitExceeded,
    NotFound,
    TransactionContention,
    Unavailable,
    ValidationError,
)
from meridian.ports import (
    Document,
    DocumentChange,
    DocumentStore,
    JsonValue,
    Query,
    Snapshot,
    Transaction,
)

T = TypeVar("T")
_log = logging.getLogger("meridian.gcp.firestore")
_KINDS: dict[str, Literal["added", "modified", "removed"]] = {
    "ADDED": "added",
    "MODIFIED": "modified",
    "REMOVED": "removed",
}


def _plain(value: Any) -> Any:
    """Client values → the port's: DatetimeWithNanoseconds → aware UTC datetime, maps → dicts."""
    if isinstance(value, datetime):
        return datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            tzinfo=UTC,
        )
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _document(snapshot: Any) -> Document | None:
    if not snapshot.exists:
        return None
    path = snapshot.reference.path
    return Document(
        path,
        _plain(snapshot.to_dict() or {}),
        _plain(snapshot.create_time),
        _plain(snapshot.update_time),
    )


@contextmanager
def _translated(path: str = "") -> Iterator[None]:
    """Google's exceptions → the core's, at the boundary."""
    try:
        yield
    except gexc.AlreadyExists as e:
        raise AlreadyExists(path or str(e)) from e
    except gexc.NotFound as e:
        raise NotFound(path or str(e)) from e
    except gexc.Aborted as e:
        raise TransactionContention(
            f"Firestore aborted the transaction on {path}: {e.message}"
        ) from e
    except gexc.InvalidArgument as e:
        if "size" in str(e).lower() or "exceeds" in str(e).lower():
            raise LimitExceeded(f"{path}: {e.message}") from e
        raise ValidationError(f"Firestore refused the request on {path}: {e.message}") from e
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted) as e:
        raise Unavailable(f"Firestore unavailable: {e.message}") from e
    except firestore_helpers.ReadAfterWriteError as e:
        raise ValidationError(f"a transaction must do all its reads before any write: {e}") from e


@dataclass(frozen=True)
class Backoff:
    """The pause before re-running an aborted transaction: a uniformly random time up to a
    ceiling that starts at ``initial_s`` and is multiplied by ``multiplier`` after each abort, up
    to ``maximum_s`` (the values of the Python client's own commit retry, ``_sleep`` in
    ``firestore_v1.transaction``).

    Why pause at all: Google's Python client re-runs an aborted transaction at once, relying on
    the server to keep its place in line. Firestore's emulator does not: two transactions that
    read one document and both commit deadlock until its 2 s lock timeout aborts one, and
    clients that retry at once collide again. 4 clients x 20 increments of one document on the
    emulator: without pauses 61 of 80 landed in 121 s (19 gave up after 5 attempts); with these,
    all 80 in 3-7 s, 3-5 aborts, none needing more than 3 attempts. The random pause
    (full jitter) is what spreads the clients apart; production Firestore gains the same.
    """

    initial_s: float = 1.0
    maximum_s: float = 30.0
    multiplier: float = 2.0

    def delays(self) -> Iterator[float]:
        ceiling = self.initial_s
        while True:
            yield random.uniform(0.0, ceiling)
            ceiling = min(ceiling * self.multiplier, self.maximum_s)


def _aborted(error: BaseException) -> bool:
    """Whether ``error`` is Firestore's ABORTED: raised by a read (translated to
    TransactionContention by ``_translated``) or by the commit (wrapped by the client in a
    ValueError)."""
    return isinstance(error, gexc.Aborted) or isinstance(error.__cause__, gexc.Aborted)


class FirestoreTransaction(Transaction):
    def __init__(self, store: FirestoreDocumentStore, transaction: Any) -> None:
        self._store = store
        self._tx = transaction

    def get(self, path: str) -> Document | None:
        check_document_path(path)
        with _translated(path):
            return _document(self._store.ref(path).get(transaction=self._tx))

    def query(self, query: Query) -> list[Document]:
        with _translated(query.collection):
            return [
                d
                for s in self._store.native_query(query).get(transaction=self._tx)
                if (d := _document(s)) is not None
            ]

    def create(self, path: str, data: Mapping[str, JsonValue]) -> None:
        check_document_path(path)
        check_document(path, data)
        self._tx.create(self._store.ref(path), dict(data))

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> None:
        check_document_path(path)
        check_document(path, data)
        self._tx.set(self._store.ref(path), dict(data), merge=merge)

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> None:
        check_document_path(path)
        self._tx.update(self._store.ref(path), dict(fields))

    def delete(self, path: str) -> None:
        check_document_path(path)
        self._tx.delete(self._store.ref(path))


class FirestoreDocumentStore(DocumentStore):
    """Firestore in Native mode. ``ttl_fields`` names the TTL field per collection id, as the TTL
    policies in terraform do; ``sweep_expired`` deletes what has expired now (production Firestore
    does that itself within about a day; emulators do not do it at all). ``backoff`` paces the
    re-runs of aborted transactions and ``sleep`` waits them out (tests pass their own)."""

    def __init__(
        self,
        project: str,
        *,
        database: str | None = None,
        ttl_fields: Mapping[str, str] | None = None,
        client: Any = None,
        backoff: Backoff = Backoff(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client or (
            firestore.Client(project=project, database=database)
            if database
            else firestore.Client(project=project)
        )
        self.ttl_fields = dict(ttl_fields or {})
        self.backoff = backoff
        self._sleep = sleep

    def ref(self, path: str) -> Any:
        return self.client.document(path)

    def native_query(self, query: Query) -> Any:
        check_query(query)
        native: Any = self.client.collection(query.collection)
        for field_path, op, value in query.filters:
            native = native.where(
                filter=FieldFilter(field_path, op, list(value) if op == "in" else value)
            )
        for field_path, direction in query.orders:
            native = native.order_by(
                field_path,
                direction=firestore.Query.DESCENDING
                if direction == "desc"
                else firestore.Query.ASCENDING,
            )
        if query.limit_to is not None:
            native = native.limit(query.limit_to)
        return native

    def close(self) -> None:
        self.client.close()

    # reads ---------------------------------------------------------------------------------

    def get(self, path: str) -> Document | None:
        check_document_path(path)
        with _translated(path):
            return _document(self.ref(path).get())

    def get_all(self, paths: Sequence[str]) -> dict[str, Document | None]:
        unique = list(dict.fromkeys(paths))
        for path in unique:
            check_document_path(path)
        found: dict[str, Document | None] = dict.fromkeys(unique)
        with _translated(unique[0] if unique else ""):
            for snapshot in self.client.get_all([self.ref(p) for p in unique]):
                found[snapshot.reference.path] = _document(snapshot)
        return found

    def query(self, query: Query) -> list[Document]:
        with _translated(query.collection):
            return [d for s in self.native_query(query).stream() if (d := _document(s)) is not None]

    # writes --------------------------------------------------------------------------------

    def _write_and_read(self, path: str, write: Callable[[Any], Any]) -> Document:
        ref = self.ref(path)
        with _translated(path):
            write(ref)
            document = _document(ref.get())
        if document is None:  # deleted by someone else in between; the write itself succeeded
            raise NotFound(path)
        return document

    def create(self, path: str, data: Mapping[str, JsonValue]) -> Document:
        check_document_path(path)
        check_document(path, data)
        return self._write_and_read(path, lambda ref: ref.create(dict(data)))

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> Document:
        check_document_path(path)
        check_document(path, data)
        return self._write_and_read(path, lambda ref: ref.set(dict(data), merge=merge))

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> Document:
        check_document_path(path)
        return self._write_and_read(path, lambda ref: ref.update(dict(fields)))

    def delete(self, path: str) -> None:
        check_document_path(path)
        with _translated(path):
            self.ref(path).delete()

    def batch_write(
        self, writes: Sequence[tuple[str, str, Mapping[str, JsonValue] | None]]
    ) -> None:
        batch = self.client.batch()
        for op, path, data in writes:
            ref = self.ref(path)
            if op == "delete":
                check_document_path(path)
                batch.delete(ref)
                continue
            if data is None:
                raise ValidationError(f"a {op} of {path} needs a mapping of fields")
            if op == "update":
                check_document_path(path)
                batch.update(ref, dict(data))
            elif op in ("create", "set", "merge"):
                check_document_path(path)
                check_document(path, data)
                if op == "create":
                    batch.create(ref, dict(data))
                else:
                    batch.set(ref, dict(data), merge=op == "merge")
            else:
                raise ValidationError(f"unknown write operation {op!r}")
        with _translated(writes[0][1] if writes else ""):
            batch.commit()

    def run_transaction(self, function: Callable[[Transaction], T], max_attempts: int = 5) -> T:
        """Each attempt is one Firestore transaction (the client's ``transactional`` with a single
        attempt: it begins, runs ``function``, commits, and rolls back if anything raises); an
        aborted one is re-run after ``self.backoff``'s next pause."""

        @firestore.transactional
        def attempt(transaction: Any) -> T:
            return function(FirestoreTransaction(self, transaction))

        pauses = self.backoff.delays()
        for attempt_number in range(1, max_attempts + 1):
            try:
                with _translated():
                    try:
                        return attempt(self.client.transaction(max_attempts=1))
                    except ValueError as e:
                        if not _aborted(e):
                            raise
                        last: BaseException = e.__cause__ or e
            except TransactionContention as e:
                if not _aborted(e):
                    raise
                last = e.__cause__ or e
            if attempt_number < max_attempts:
                pause = next(pauses)
                _log.warning(
                    "transaction aborted (attempt %d of %d), retrying in %.2f s: %s",
                    attempt_number,
                    max_attempts,
                    pause,
                    last,
                )
                self._sleep(pause)
        message = getattr(last, "message", str(last))
        raise TransactionContention(
            f"transaction gave up after {max_attempts} attempts: too much contention on these "
            f"documents ({message})"
        ) from last

    # TTL -----------------------------------------------------------------------------------

    def sweep_expired(self, now: datetime | None = None, batch: int = 500) -> int:
        """Delete documents whose TTL field is past, each one only if unchanged since it was read
        (so a document refreshed meanwhile survives). Returns how many were deleted."""
        cutoff = now or datetime.now(UTC)
        deleted = 0
        for collection_id, field in self.ttl_fields.items():
            group = self.client.collection_group(collection_id)
            for snapshot in (
                group.where(filter=FieldFilter(field, "<=", cutoff)).limit(batch).stream()
            ):
                try:
                    snapshot.reference.delete(
                        option=self.client.write_option(last_update_time=snapshot.update_time)
                    )
                    deleted += 1
                except (gexc.FailedPrecondition, gexc.NotFound):
                    continue
        return deleted

    # listeners -----------------------------------------------------------------------------

    def watch_document(self, path: str) -> AsyncIterator[Snapshot]:
        check_document_path(path)
        return self._watch(self.ref(path))

    def watch_query(self, query: Query) -> AsyncIterator[Snapshot]:
        check_collection_path(query.collection)
        return self._watch(self.native_query(query))

    async def _watch(self, target: Any) -> AsyncIterator[Snapshot]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Snapshot | BaseException] = asyncio.Queue()
        first = threading.Event()

        def on_snapshot(snapshots: Any, changes: Any, read_time: Any) -> None:
            # Runs on the client's background thread.
            documents = tuple(d for s in snapshots if (d := _document(s)) is not None)
            converted = tuple(
                DocumentChange(
                    _KINDS[c.type.name],
                    _document(c.document) if c.type.name != "REMOVED" else None,
                    c.document.reference.path,
                )
                for c in changes
            )
            if not first.is_set():
                first.set()
                converted = tuple(DocumentChange("added", d, d.path) for d in documents)
            loop.call_soon_threadsafe(
                queue.put_nowait, Snapshot(documents, converted, _plain(read_time))
            )

        watch = target.on_snapshot(on_snapshot)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            watch.unsubscribe()
