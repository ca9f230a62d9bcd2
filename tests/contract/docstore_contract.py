"""The DocumentStore contract: one suite that every adapter must pass (reference §7).

Subclasses provide ``make_store`` and the hooks below; a hook an adapter's backend cannot provide
is the only reason to mark a test there, with the reason written next to it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meridian.domain.errors import (
    AlreadyExists,
    LimitExceeded,
    NotFound,
    TransactionContention,
    ValidationError,
)
from meridian.ports import DocumentStore, Query, Snapshot, Transaction

# A guard against a hung listener, not a timing assertion: far above any real latency.
WAIT_S = 20.0


async def next_snapshot(listener: AsyncIterator[Snapshot]) -> Snapshot:
    return await asyncio.wait_for(anext(listener), WAIT_S)


async def next_matching(
    listener: AsyncIterator[Snapshot], predicate: Callable[[Snapshot], bool]
) -> Snapshot:
    while True:
        snapshot = await next_snapshot(listener)
        if predicate(snapshot):
            return snapshot


class DocumentStoreContract:
    """Subclass with ``make_store``; tests use ``self.col(name)`` for collection names so that
    runs sharing one backend (an emulator) never see each other's documents."""

    def make_store(self, ttl_fields: Mapping[str, str]) -> DocumentStore:
        raise NotImplementedError

    def remote_write(self, path: str, data: Mapping[str, Any]) -> None:
        """Write ``data`` at ``path`` from another client (another process where possible)."""
        raise NotImplementedError

    def contention(
        self, store: DocumentStore, release_after_failures: int | None
    ) -> AbstractContextManager[None]:
        """While open, transactions on ``store`` fail with contention; the contention ends after
        that many failed attempts (never, with None)."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _names(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]

    def col(self, name: str) -> str:
        return f"{name}_{self.suffix}"

    @pytest.fixture
    def store(self) -> Iterator[DocumentStore]:
        store = self.make_store({self.col("ledger"): "expire_at"})
        yield store
        close = getattr(store, "close", None)
        if close is not None:
            close()

    # create / get ------------------------------------------------------------------------

    def test_create_then_get_round_trips_values(self, store: DocumentStore) -> None:
        at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
        data = {
            "s": "é",
            "i": 7,
            "f": 2.5,
            "b": True,
            "n": None,
            "l": [1, "x", {"k": at}],
            "m": {"deep": {"at": at}},
        }
        path = f"{self.col('parcels')}/p-1"
        created = store.create(path, data)
        got = store.get(path)
        assert got is not None
        assert got.data == data == created.data
        assert got.id == "p-1" and got.path == path
        assert got.data["m"]["deep"]["at"].tzinfo is not None
        assert got.data["m"]["deep"]["at"].utcoffset() == timedelta(0)
        assert got.create_time == got.update_time and got.create_time.tzinfo is not None

    def test_naive_datetimes_are_taken_as_utc(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.create(path, {"at": datetime(2026, 1, 2, 3, 4, 5)})
        got = store.get(path)
        assert got is not None and got.data["at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def test_get_missing_is_none(self, store: DocumentStore) -> None:
        assert store.get(f"{self.col('parcels')}/nope") is None

    def test_get_all_reads_many_documents_at_once_and_names_the_missing(
        self, store: DocumentStore
    ) -> None:
        col = self.col("contacts")
        for i in range(3):
            store.set(f"{col}/p-{i}", {"n": i})
        found = store.get_all([f"{col}/p-2", f"{col}/p-0", f"{col}/nobody", f"{col}/p-2"])
        assert list(found) == [f"{col}/p-2", f"{col}/p-0", f"{col}/nobody"]
        assert {p: d.data["n"] if d else None for p, d in found.items()} == {
            f"{col}/p-2": 2,
            f"{col}/p-0": 0,
            f"{col}/nobody": None,
        }
        assert store.get_all([]) == {}

    def test_create_existing_raises_already_exists(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.create(path, {"v": 1})
        with pytest.raises(AlreadyExists):
            store.create(path, {"v": 2})
        got = store.get(path)
        assert got is not None and got.data == {"v": 1}

    def test_subcollections_are_their_own_collections(self, store: DocumentStore) -> None:
        parcels = self.col("parcels")
        store.create(f"{parcels}/p-1", {"v": 1})
        store.create(f"{parcels}/p-1/scans/s-1", {"v": 2})
        assert [d.id for d in store.query(Query(parcels))] == ["p-1"]
        assert [d.data for d in store.query(Query(f"{parcels}/p-1/scans"))] == [{"v": 2}]

    # update / set / delete ---------------------------------------------------------------

    def test_update_missing_raises_not_found(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/missing"
        with pytest.raises(NotFound):
            store.update(path, {"status": "X"})
        assert store.get(path) is None

    def test_update_field_paths_change_only_those_fields(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.create(path, {"status": "CREATED", "stop": {"lat": 1.0, "lng": 2.0}, "keep": 1})
        updated = store.update(path, {"status": "DELIVERED", "stop.lat": 9.0, "pod.ref": "sig/1"})
        expected = {
            "status": "DELIVERED",
            "stop": {"lat": 9.0, "lng": 2.0},
            "keep": 1,
            "pod": {"ref": "sig/1"},
        }
        assert updated.data == expected
        got = store.get(path)
        assert got is not None and got.data == expected
        assert got.update_time > got.create_time

    def test_update_replaces_a_whole_map_named_by_its_path(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.create(path, {"stop": {"lat": 1.0, "lng": 2.0}})
        store.update(path, {"stop": {"lat": 5.0}})
        got = store.get(path)
        assert got is not None and got.data == {"stop": {"lat": 5.0}}

    def test_merge_merges_nested_maps(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.set(path, {"a": 1, "m": {"x": 1, "y": 2}})
        store.set(path, {"m": {"y": 20, "z": 30}, "b": 2}, merge=True)
        got = store.get(path)
        assert got is not None and got.data == {"a": 1, "b": 2, "m": {"x": 1, "y": 20, "z": 30}}

    def test_set_without_merge_replaces_the_document(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.set(path, {"a": 1, "m": {"x": 1}})
        store.set(path, {"only": True})
        got = store.get(path)
        assert got is not None and got.data == {"only": True}

    def test_merge_creates_a_missing_document(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.set(path, {"a": 1}, merge=True)
        got = store.get(path)
        assert got is not None and got.data == {"a": 1}

    def test_delete_removes_and_deleting_a_missing_document_is_fine(
        self, store: DocumentStore
    ) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.create(path, {"v": 1})
        store.delete(path)
        assert store.get(path) is None
        store.delete(path)
        store.create(path, {"v": 2})  # a deleted document can be created again

    def test_batch_write_applies_every_write_in_order(self, store: DocumentStore) -> None:
        parcels = self.col("parcels")
        store.create(f"{parcels}/taken", {"v": 0})
        store.batch_write(
            [
                ("create", f"{parcels}/a", {"v": 1}),
                ("set", f"{parcels}/b", {"v": 2}),
                ("merge", f"{parcels}/taken", {"w": 1}),
                ("update", f"{parcels}/a", {"v": 3}),
            ]
        )
        assert {d.id: d.data for d in store.query(Query(parcels))} == {
            "a": {"v": 3},
            "b": {"v": 2},
            "taken": {"v": 0, "w": 1},
        }

    def test_batch_write_is_all_or_nothing(self, store: DocumentStore) -> None:
        parcels = self.col("parcels")
        store.create(f"{parcels}/taken", {"v": 0})
        store.create(f"{parcels}/b", {"v": 2})
        with pytest.raises(AlreadyExists):
            store.batch_write(
                [("delete", f"{parcels}/b", None), ("create", f"{parcels}/taken", {"v": 9})]
            )
        got = store.get(f"{parcels}/b")
        assert got is not None and got.data == {"v": 2}

    # limits ------------------------------------------------------------------------------

    def test_a_document_over_1_mib_is_refused_naming_the_limit(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/big"
        with pytest.raises(LimitExceeded, match="1 MiB"):
            store.create(path, {"blob": "x" * (1024 * 1024)})
        assert store.get(path) is None
        store.create(path, {"blob": "x" * (1024 * 1024 - 200)})  # just under the limit is fine

    @pytest.mark.parametrize(
        "bad",
        [
            "parcels",
            "parcels/p-1/scans",
            "parcels//p-1",
            "parcels/..",
            "/parcels/p-1",
            "parcels/" + "x" * 1501,
            "parcels/__id__",
        ],
    )
    def test_path_rules(self, store: DocumentStore, bad: str) -> None:
        with pytest.raises(LimitExceeded):
            store.set(bad, {"v": 1})

    # queries -----------------------------------------------------------------------------

    def _fleet(self, store: DocumentStore) -> str:
        vehicles = self.col("vehicles")
        for i, (status, load) in enumerate(
            [("IDLE", 0), ("EN_ROUTE", 5), ("EN_ROUTE", 12), ("OFFLINE", 3), ("IDLE", 7)]
        ):
            store.create(f"{vehicles}/v{i}", {"status": status, "load": load, "seq": i})
        return vehicles

    @pytest.mark.parametrize(
        ("field", "op", "value", "expected"),
        [
            ("status", "==", "EN_ROUTE", ["v1", "v2"]),
            ("status", "!=", "EN_ROUTE", ["v0", "v3", "v4"]),
            ("load", "<", 5, ["v0", "v3"]),
            ("load", "<=", 5, ["v0", "v1", "v3"]),
            ("load", ">", 5, ["v2", "v4"]),
            ("load", ">=", 5, ["v1", "v2", "v4"]),
            ("status", "in", ["IDLE", "OFFLINE"], ["v0", "v3", "v4"]),
        ],
    )
    def test_query_operators(
        self, store: DocumentStore, field: str, op: Any, value: Any, expected: list[str]
    ) -> None:
        vehicles = self._fleet(store)
        found = store.query(Query(vehicles).where(field, op, value).order_by("seq"))
        assert [d.id for d in found] == expected

    def test_query_combines_filters_orders_and_limits(self, store: DocumentStore) -> None:
        vehicles = self._fleet(store)
        query = Query(vehicles).where("status", "in", ["EN_ROUTE", "IDLE"])
        assert [d.id for d in store.query(query.order_by("load", "desc"))] == [
            "v2",
            "v4",
            "v1",
            "v0",
        ]
        assert [d.id for d in store.query(query.order_by("load").limit(2))] == ["v0", "v1"]
        both = Query(vehicles).where("status", "==", "EN_ROUTE").where("load", ">", 6)
        assert [d.id for d in store.query(both)] == ["v2"]
        assert store.query(Query(vehicles).where("status", "==", "NONE")) == []

    # transactions ------------------------------------------------------------------------

    def test_transaction_reads_then_writes_atomically(self, store: DocumentStore) -> None:
        counters = self.col("counters")
        store.create(f"{counters}/c", {"n": 1})

        def move(tx: Transaction) -> int:
            doc = tx.get(f"{counters}/c")
            assert doc is not None
            tx.update(f"{counters}/c", {"n": doc.data["n"] + 1})
            tx.create(f"{counters}/log-{doc.data['n']}", {"from": doc.data["n"]})
            return int(doc.data["n"])

        assert store.run_transaction(move) == 1
        assert store.run_transaction(move) == 2
        got = store.get(f"{counters}/c")
        assert got is not None and got.data == {"n": 3}
        assert len(store.query(Query(counters))) == 3

    def test_a_failing_transaction_commits_nothing(self, store: DocumentStore) -> None:
        counters = self.col("counters")
        store.create(f"{counters}/c", {"n": 1})

        def fail(tx: Transaction) -> None:
            tx.update(f"{counters}/c", {"n": 99})
            raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError):
            store.run_transaction(fail)
        got = store.get(f"{counters}/c")
        assert got is not None and got.data == {"n": 1}

    def test_create_if_absent_in_a_transaction(self, store: DocumentStore) -> None:
        ledger = self.col("requests")

        def first_response(tx: Transaction) -> str:
            seen = tx.get(f"{ledger}/req-1")
            if seen is not None:
                return str(seen.data["response"])
            tx.create(f"{ledger}/req-1", {"response": "accepted"})
            return "new"

        assert store.run_transaction(first_response) == "new"
        assert store.run_transaction(first_response) == "accepted"

    def test_transaction_create_of_an_existing_document_raises(self, store: DocumentStore) -> None:
        path = f"{self.col('requests')}/req-1"
        store.create(path, {"v": 1})
        with pytest.raises(AlreadyExists):
            store.run_transaction(lambda tx: tx.create(path, {"v": 2}))

    def test_transaction_reads_after_writes_are_refused(self, store: DocumentStore) -> None:
        path = f"{self.col('requests')}/req-1"

        def bad(tx: Transaction) -> None:
            tx.set(path, {"v": 1})
            tx.get(path)

        with pytest.raises(ValidationError):
            store.run_transaction(bad)
        assert store.get(path) is None

    def test_transaction_retried_on_contention(self, store: DocumentStore) -> None:
        path = f"{self.col('counters')}/c"
        store.create(path, {"n": 0})
        calls = []

        def increment(tx: Transaction) -> None:
            calls.append(1)
            doc = tx.get(path)
            assert doc is not None
            tx.update(path, {"n": doc.data["n"] + 1})

        with self.contention(store, release_after_failures=2):
            store.run_transaction(increment)
        got = store.get(path)
        assert got is not None and got.data == {"n": 1}

    def test_transaction_gives_up_after_max_attempts(self, store: DocumentStore) -> None:
        path = f"{self.col('counters')}/c"
        store.create(path, {"n": 0})
        with (
            self.contention(store, release_after_failures=None),
            pytest.raises(TransactionContention, match="5 attempts"),
        ):
            store.run_transaction(lambda tx: tx.update(path, {"n": 1}))
        got = store.get(path)
        assert got is not None and got.data == {"n": 0}

    def test_concurrent_transactions_lose_no_update(self, store: DocumentStore) -> None:
        path = f"{self.col('counters')}/c"
        store.create(path, {"n": 0})
        clients = [self.make_store({}) for _ in range(3)]

        def increment(tx: Transaction) -> None:
            doc = tx.get(path)
            assert doc is not None
            tx.update(path, {"n": doc.data["n"] + 1})

        def worker(client: DocumentStore) -> None:
            for _ in range(20):
                client.run_transaction(increment)

        threads = [threading.Thread(target=worker, args=(c,)) for c in [store, *clients]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = store.get(path)
        assert got is not None and got.data == {"n": 80}

    # TTL ---------------------------------------------------------------------------------

    def test_ttl_sweep_deletes_expired_documents_as_normal_deletes(
        self, store: DocumentStore
    ) -> None:
        ledger = self.col("ledger")
        now = datetime.now(UTC)
        store.create(f"{ledger}/old", {"expire_at": now - timedelta(minutes=1)})
        store.create(f"{ledger}/fresh", {"expire_at": now + timedelta(hours=1)})
        store.create(f"{ledger}/not-a-time", {"expire_at": "yesterday"})  # never expires (§7.5)

        async def scenario() -> None:
            listener = store.watch_document(f"{ledger}/old")
            first = await next_snapshot(listener)
            assert [d.id for d in first.documents] == ["old"]
            deleted = await asyncio.to_thread(store.sweep_expired)  # type: ignore[attr-defined]
            assert deleted == 1
            removed = await next_matching(listener, lambda s: not s.documents)
            assert [c.kind for c in removed.changes] == ["removed"]
            await listener.aclose()  # type: ignore[attr-defined]

        asyncio.run(scenario())
        assert {d.id for d in store.query(Query(ledger))} == {"fresh", "not-a-time"}

    # listeners ---------------------------------------------------------------------------

    def test_document_listener_gets_the_snapshot_then_each_change(
        self, store: DocumentStore
    ) -> None:
        path = f"{self.col('parcels')}/p-1"
        store.create(path, {"status": "CREATED"})

        async def scenario() -> None:
            listener = store.watch_document(path)
            first = await next_snapshot(listener)
            assert [d.data for d in first.documents] == [{"status": "CREATED"}]
            assert [c.kind for c in first.changes] == ["added"]
            await asyncio.to_thread(store.update, path, {"status": "DELIVERED"})
            changed = await next_matching(listener, lambda s: bool(s.changes))
            assert [c.kind for c in changed.changes] == ["modified"]
            assert changed.documents[0].data == {"status": "DELIVERED"}
            await asyncio.to_thread(store.delete, path)
            gone = await next_matching(listener, lambda s: not s.documents)
            assert [c.kind for c in gone.changes] == ["removed"]
            await listener.aclose()  # type: ignore[attr-defined]

        asyncio.run(scenario())

    def test_listener_of_a_missing_document_sees_it_created(self, store: DocumentStore) -> None:
        path = f"{self.col('parcels')}/later"

        async def scenario() -> None:
            listener = store.watch_document(path)
            first = await next_snapshot(listener)
            assert first.documents == () and first.changes == ()
            await asyncio.to_thread(store.create, path, {"v": 1})
            added = await next_matching(listener, lambda s: bool(s.documents))
            assert [c.kind for c in added.changes] == ["added"]
            await listener.aclose()  # type: ignore[attr-defined]

        asyncio.run(scenario())

    def test_listener_sees_a_remote_write(self, store: DocumentStore) -> None:
        path = f"{self.col('route_board')}/r-1"
        store.create(path, {"stops": 1})

        async def scenario() -> None:
            listener = store.watch_document(path)
            await next_snapshot(listener)
            await asyncio.to_thread(self.remote_write, path, {"stops": 2})
            changed = await next_matching(listener, lambda s: bool(s.changes))
            assert changed.documents[0].data == {"stops": 2}
            await listener.aclose()  # type: ignore[attr-defined]

        asyncio.run(scenario())

    def test_query_listener_tracks_membership(self, store: DocumentStore) -> None:
        parcels = self.col("parcels")
        store.create(f"{parcels}/a", {"status": "OUT", "n": 1})
        store.create(f"{parcels}/b", {"status": "HELD", "n": 2})
        query = Query(parcels).where("status", "==", "OUT")

        async def scenario() -> None:
            listener = store.watch_query(query)
            first = await next_snapshot(listener)
            assert [d.id for d in first.documents] == ["a"]
            await asyncio.to_thread(store.update, f"{parcels}/b", {"status": "OUT"})
            joined = await next_matching(listener, lambda s: len(s.documents) == 2)
            assert [(c.kind, c.path.rsplit("/", 1)[1]) for c in joined.changes] == [("added", "b")]
            await asyncio.to_thread(store.update, f"{parcels}/a", {"status": "DONE"})
            left = await next_matching(listener, lambda s: len(s.documents) == 1)
            assert [d.id for d in left.documents] == ["b"]
            assert [c.kind for c in left.changes] == ["removed"]
            await listener.aclose()  # type: ignore[attr-defined]

        asyncio.run(scenario())
