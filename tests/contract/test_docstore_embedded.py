"""The DocumentStore contract on the embedded adapter, plus its change log."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meridian.domain.errors import Conflict, LimitExceeded
from meridian.embedded.docstore import ChangesExpired, EmbeddedDocumentStore
from meridian.ports import DocumentStore, Query, Transaction

from .docstore_contract import DocumentStoreContract, next_matching, next_snapshot

ROOT = Path(__file__).resolve().parents[2]


class TestEmbeddedDocumentStore(DocumentStoreContract):
    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path

    def make_store(self, ttl_fields: Mapping[str, str]) -> DocumentStore:
        return EmbeddedDocumentStore(self.data_dir, ttl_fields=ttl_fields)

    def remote_write(self, path: str, data: Mapping[str, Any]) -> None:
        code = (
            "import json, sys; from pathlib import Path;"
            "from meridian.embedded.docstore import EmbeddedDocumentStore;"
            "EmbeddedDocumentStore(Path(sys.argv[1])).set(sys.argv[2], json.loads(sys.argv[3]))"
        )
        import json

        subprocess.run(
            [sys.executable, "-c", code, str(self.data_dir), path, json.dumps(data)],
            check=True,
            cwd=ROOT,
        )

    @contextmanager
    def contention(
        self, store: DocumentStore, release_after_failures: int | None
    ) -> Iterator[None]:
        assert isinstance(store, EmbeddedDocumentStore)
        with write_lock_held(store, release_after_failures):
            yield

    def test_transactions_run_together_stay_independent(self, store: DocumentStore) -> None:
        # The group commit of the command service (``run_transactions``, the embedded adapter's
        # own method since the port has none): each function is atomic on its own, and one that
        # raises takes nobody else down with it.
        assert isinstance(store, EmbeddedDocumentStore)
        counters = self.col("counters")
        store.create(f"{counters}/taken", {"n": 0})

        def write(name: str) -> Callable[[Transaction], str]:
            def work(tx: Transaction) -> str:
                tx.create(f"{counters}/{name}", {"n": 1})
                tx.create(f"{counters}/{name}-log", {"of": name})
                return name

            return work

        def refused(tx: Transaction) -> None:
            taken = tx.get(f"{counters}/taken")
            tx.create(f"{counters}/fresh", {"n": 1})
            if taken is not None:
                raise Conflict("taken already")

        outcomes = store.run_transactions([write("a"), refused, write("b")])
        assert outcomes[0] == "a" and outcomes[2] == "b"
        assert isinstance(outcomes[1], Conflict)
        assert store.get(f"{counters}/fresh") is None  # the refused one rolled back whole
        assert {d.id for d in store.query(Query(counters))} == {"taken", "a", "a-log", "b", "b-log"}


class TestEmbeddedDocumentStoreWithoutRereads(TestEmbeddedDocumentStore):
    """The same contract for a store that keeps no decoded documents (the command service's)."""

    def make_store(self, ttl_fields: Mapping[str, str]) -> DocumentStore:
        return EmbeddedDocumentStore(self.data_dir, ttl_fields=ttl_fields, rereads=False)


# The change log (embedded only: in production Firestore itself feeds Eventarc) -----------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedDocumentStore]:
    s = EmbeddedDocumentStore(tmp_path, change_retention=timedelta(hours=1))
    yield s
    s.close()


def test_each_committed_write_is_one_change_with_old_new_and_mask(
    store: EmbeddedDocumentStore,
) -> None:
    store.create("parcels/p-1", {"status": "CREATED", "stop": {"lat": 1}})
    store.update("parcels/p-1", {"status": "OUT", "stop.lat": 2})
    store.update("parcels/p-1", {"status": "OUT"})  # no-op: no change, as Firestore emits no event
    store.delete("parcels/p-1")
    store.delete("parcels/p-1")  # nothing to delete: no change
    with pytest.raises(RuntimeError):
        store.run_transaction(lambda tx: (tx.set("parcels/p-2", {}), _raise()))
    changes = store.changes.read_changes("eventarc", limit=10)
    assert [(c.kind, c.path) for c in changes] == [
        ("created", "parcels/p-1"),
        ("updated", "parcels/p-1"),
        ("deleted", "parcels/p-1"),
    ]
    created, updated, deleted = changes
    assert created.old_data is None and created.new_data == {
        "status": "CREATED",
        "stop": {"lat": 1},
    }
    assert updated.update_mask == ("status", "stop.lat")
    assert updated.old_data == {"status": "CREATED", "stop": {"lat": 1}}
    assert deleted.new_data is None and deleted.old_data == {"status": "OUT", "stop": {"lat": 2}}
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    assert created.commit_time < updated.commit_time < deleted.commit_time


def _raise() -> None:
    raise RuntimeError("rolled back")


def test_writes_to_one_document_in_one_commit_each_see_the_one_before(
    store: EmbeddedDocumentStore,
) -> None:
    # The table is written once at the end of a commit; each write still applies to what the
    # writes before it in the same commit left, and each records its own change.
    store.create("parcels/p-1", {"status": "CREATED", "n": 1})
    first = store.get("parcels/p-1")
    assert first is not None
    time.sleep(0.002)
    store.batch_write(
        [
            ("update", "parcels/p-1", {"n": 2}),
            ("delete", "parcels/p-1", None),
            ("create", "parcels/p-1", {"status": "RECREATED"}),
            ("merge", "parcels/p-1", {"n": 3}),
            ("set", "parcels/p-2", {"v": 1}),
            ("delete", "parcels/p-2", None),
        ]
    )
    document = store.get("parcels/p-1")
    assert document is not None
    assert document.data == {"status": "RECREATED", "n": 3}
    # Recreated in this commit: its create time is the commit's, not the deleted document's.
    assert document.create_time == document.update_time > first.create_time
    assert store.get("parcels/p-2") is None
    changes = store.changes.read_changes("eventarc", limit=10)[1:]
    assert [(c.kind, c.path) for c in changes] == [
        ("updated", "parcels/p-1"),
        ("deleted", "parcels/p-1"),
        ("created", "parcels/p-1"),
        ("updated", "parcels/p-1"),
        ("created", "parcels/p-2"),
        ("deleted", "parcels/p-2"),
    ]
    assert changes[3].old_data == {"status": "RECREATED"}
    assert changes[3].update_mask == ("n",)


def test_a_transaction_reads_what_another_process_wrote_after_this_one(
    store: EmbeddedDocumentStore, tmp_path: Path
) -> None:
    # This process remembers the decoded form of what it wrote; another process's newer write
    # must be read, not the remembered one.
    store.run_transaction(lambda tx: tx.set("live_map/veh-1", {"lat": 1.0}))
    other = EmbeddedDocumentStore(tmp_path)
    other.set("live_map/veh-1", {"lat": 2.0})
    seen = store.run_transaction(lambda tx: tx.get("live_map/veh-1"))
    assert seen is not None and seen.data == {"lat": 2.0}
    other.close()


def test_a_transaction_caller_may_change_what_it_read(store: EmbeddedDocumentStore) -> None:
    store.run_transaction(lambda tx: tx.set("live_map/veh-1", {"at": {"lat": 1.0}}))

    def read_and_scribble(tx: Any) -> None:
        document = tx.get("live_map/veh-1")
        document.data["at"]["lat"] = 99.0  # the caller's copy

    store.run_transaction(read_and_scribble)
    seen = store.run_transaction(lambda tx: tx.get("live_map/veh-1"))
    assert seen is not None and seen.data == {"at": {"lat": 1.0}}


def test_a_group_commit_records_a_change_for_each_committed_transaction_only(
    store: EmbeddedDocumentStore,
) -> None:
    before = store.changes.read_changes("eventarc", limit=100)
    outcomes = store.run_transactions(
        [
            lambda tx: tx.set("parcels/p-1", {"status": "DELIVERED"}),
            lambda tx: (tx.set("parcels/p-2", {"status": "DELIVERED"}), _raise()),
            lambda tx: tx.set("parcels/p-3", {"status": "DELIVERED"}),
        ]
    )
    assert isinstance(outcomes[1], RuntimeError)
    changes = store.changes.read_changes("eventarc", limit=100)[len(before) :]
    assert [(c.kind, c.path) for c in changes] == [
        ("created", "parcels/p-1"),
        ("created", "parcels/p-3"),
    ]
    # One SQLite commit, but each transaction keeps its own Firestore commit time.
    assert changes[0].commit_time < changes[1].commit_time


def test_named_cursors_are_durable_and_independent(
    store: EmbeddedDocumentStore, tmp_path: Path
) -> None:
    for i in range(5):
        store.create(f"parcels/p-{i}", {"i": i})
    first = store.changes.read_changes("eventarc", limit=2)
    assert [c.path for c in first] == ["parcels/p-0", "parcels/p-1"]
    assert store.changes.read_changes("eventarc", limit=2) == first  # reading does not consume
    store.changes.advance("eventarc", first[-1].seq)
    store.changes.advance("eventarc", first[0].seq)  # never moves backwards
    reopened = EmbeddedDocumentStore(tmp_path)
    assert [c.path for c in reopened.changes.read_changes("eventarc", 10)] == [
        "parcels/p-2",
        "parcels/p-3",
        "parcels/p-4",
    ]
    assert len(reopened.changes.read_changes("audit", 10)) == 5
    reopened.close()


def test_a_cursor_behind_retention_is_told_not_skipped(store: EmbeddedDocumentStore) -> None:
    store.create("parcels/p-0", {})
    store.changes.advance("slow", 0)
    store.create("parcels/p-1", {})
    assert store.changes.prune(now=datetime.now(UTC) + timedelta(hours=2)) == 2
    store.create("parcels/p-2", {})
    with pytest.raises(ChangesExpired) as caught:
        store.changes.read_changes("slow", 10)
    assert caught.value.first_seq == 3
    store.changes.advance("slow", caught.value.first_seq - 1)
    assert [c.path for c in store.changes.read_changes("slow", 10)] == ["parcels/p-2"]


def test_a_listener_behind_retention_gets_a_fresh_snapshot(store: EmbeddedDocumentStore) -> None:
    async def scenario() -> None:
        listener = store.watch_query(Query("parcels"))
        assert (await next_snapshot(listener)).documents == ()

        # Write and prune in a worker thread without yielding to the listener in between, so
        # the changes it has not read are gone when it looks.
        def write_and_prune() -> None:
            store.create("parcels/p-1", {"v": 1})
            store.changes.prune(now=datetime.now(UTC) + timedelta(hours=2))
            store.create("parcels/p-2", {"v": 2})

        await asyncio.to_thread(write_and_prune)
        fresh = await next_matching(listener, lambda s: len(s.documents) == 2)
        assert fresh.resync
        assert [c.kind for c in fresh.changes] == ["added", "added"]
        await listener.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_query_indexes_are_used_for_indexed_fields(store: EmbeddedDocumentStore) -> None:
    from meridian.embedded.docstore.query import expression

    plan = (
        store._conn()
        .execute(
            f"EXPLAIN QUERY PLAN SELECT path FROM documents WHERE collection = ? AND {expression('status')} = ?",
            ("parcels", "OUT"),
        )
        .fetchall()
    )
    assert any("documents_field_status" in str(row) for row in plan), plan


@pytest.mark.parametrize("condition", ["= ?", "IN (?, ?)", "> ?", "!= ?"])
def test_the_partial_field_indexes_serve_every_pushed_down_filter(
    store: EmbeddedDocumentStore, condition: str
) -> None:
    from meridian.embedded.docstore.query import expression

    sql = f"SELECT path FROM documents WHERE collection = ? AND {expression('status')} {condition}"
    params = ("parcels", "A", "B")[: 1 + condition.count("?")]
    plan = store._conn().execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()

    assert any("documents_field_status" in str(row) for row in plan), plan


def test_documents_without_an_indexed_field_stay_out_of_its_index(
    store: EmbeddedDocumentStore,
) -> None:
    from meridian.embedded.docstore.db import index_name

    store.set("live_map/veh-1", {"lat": 1.0, "lng": 2.0})
    store.set("parcels/p-1", {"status": "CREATED"})
    indexed = store._conn().execute(
        f"SELECT path FROM documents INDEXED BY {index_name('status')}"
        " WHERE collection IN ('live_map', 'parcels') AND json_extract(data, '$.\"status\"') IS NOT NULL"
    )

    assert [row[0] for row in indexed] == ["parcels/p-1"]
    assert [d.id for d in store.query(Query("parcels").where("status", "==", "CREATED"))] == ["p-1"]


def test_a_data_directory_with_the_older_full_indexes_is_migrated(tmp_path: Path) -> None:
    from meridian.embedded.docstore.db import index_name

    first = EmbeddedDocumentStore(tmp_path)
    first._conn().execute(
        f"CREATE INDEX {index_name('status', version=1)} ON documents (collection, data)"
    )

    EmbeddedDocumentStore(tmp_path)  # a process of the new version opens the directory

    names = {
        r[0] for r in first._conn().execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert index_name("status") in names and index_name("status", version=1) not in names


def test_values_that_sqlite_json_cannot_hold_are_refused(store: EmbeddedDocumentStore) -> None:
    from meridian.domain.errors import ValidationError

    with pytest.raises(ValidationError):
        store.create("parcels/p-1", {"x": float("nan")})
    with pytest.raises(ValidationError):
        store.create("parcels/p-1", {"x": object()})


@pytest.mark.parametrize("leaf", [1, datetime(2026, 11, 21, tzinfo=UTC), "{[{[{[{[{[{[{[{[{[{[{["])
def test_nesting_is_limited_at_twenty_levels_whatever_the_leaf(
    store: EmbeddedDocumentStore, leaf: Any
) -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: Any = leaf
        for _ in range(levels):
            value = {"m": value}
        return value  # type: ignore[no-any-return]

    store.set("deep/ok", nested(20))
    with pytest.raises(LimitExceeded, match="nested at most 20"):
        store.set("deep/too", nested(21))


def test_nesting_through_arrays_is_limited_in_a_document_with_many_maps(
    store: EmbeddedDocumentStore,
) -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: Any = 1
        for level in range(levels - 1):  # maps and arrays of maps, by turns
            value = [value] if level % 2 else {"m": value}
        siblings = {f"s{i}": {"at": datetime(2026, 11, 21, tzinfo=UTC)} for i in range(30)}
        return {"deep": value, **siblings}

    store.set("deep/ok", nested(20))
    with pytest.raises(LimitExceeded, match="nested at most 20"):
        store.set("deep/too", nested(21))


def test_commits_never_checkpoint_and_the_background_thread_does(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    conn = store._conn()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size_before = store.file.stat().st_size
    payload = "x" * 4000
    for batch in range(20):  # ~1.6 MB, in the log until a checkpoint copies it back
        store.batch_write([("set", f"things/t-{batch}-{i}", {"v": payload}) for i in range(20)])
    deadline = time.monotonic() + 10
    # The file grows inside the checkpoint, the count right after it: wait for both.
    while (
        store.file.stat().st_size < size_before + 1_000_000 or not store._checkpointer.checkpoints
    ):
        assert time.monotonic() < deadline, "the log was never checkpointed into the file"
        time.sleep(0.05)
    store.close()


@contextmanager
def write_lock_held(
    store: EmbeddedDocumentStore, release_after_failures: int | None
) -> Iterator[None]:
    """The contract's ``contention`` on one SQLite file: another connection holds the write lock;
    the store waits only briefly for it, and each failed attempt is logged, which is when the lock
    is let go if the test asks."""
    holder = sqlite3.connect(store.file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    store._conn().execute("PRAGMA busy_timeout = 20")
    failures = []

    class Release(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            failures.append(record)
            if release_after_failures is not None and len(failures) == release_after_failures:
                holder.execute("ROLLBACK")

    handler = Release(logging.WARNING)
    logger = logging.getLogger("meridian.docstore")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        store._conn().execute(f"PRAGMA busy_timeout = {store.busy_timeout_ms}")
    if release_after_failures is not None:
        assert len(failures) == release_after_failures
