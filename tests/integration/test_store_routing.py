"""One database per store (#24): where each service's reads and writes land, what it may not
write, that a reader never waits for an owner's lock, and a data directory from before."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.catalog import load_catalog
from meridian.config import ConfigError
from meridian.documents.ownership import NotOwned, Ownership
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.docstore.stores import (
    LEGACY_FILE,
    ServiceStores,
    all_stores,
    migrate_legacy,
    store_file,
)
from meridian.embedded.eventarc import tailed_store, transport_name
from meridian.ports import Query, Transaction

CATALOG = load_catalog()
OWNERSHIP = Ownership.of(CATALOG)


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[dict[str, ServiceStores]]:
    views = {s: ServiceStores(tmp_path, OWNERSHIP, s) for s in ("command", "eta", "pod")}
    yield views
    for view in views.values():
        view.close()


def _documents(data_dir: Path, store: str) -> set[str]:
    with sqlite3.connect(store_file(data_dir, store)) as conn:
        return {r[0] for r in conn.execute("SELECT path FROM documents")}


def test_each_write_lands_in_its_owners_file(
    opened: dict[str, ServiceStores], tmp_path: Path
) -> None:
    opened["command"].set("parcels/p-1", {"status": "DELIVERED"})
    opened["command"].set("idempotency_keys/k-1", {"scope": "command"})
    opened["eta"].set("parcel_status/p-1", {"eta": 1})
    opened["eta"].set("processed_events/eta:e-1", {"at": 1})
    assert _documents(tmp_path, "command") == {"parcels/p-1", "idempotency_keys/k-1"}
    assert _documents(tmp_path, "eta") == {"parcel_status/p-1", "processed_events/eta:e-1"}
    # each reads the other's, from the owner's file
    assert opened["eta"].get("parcels/p-1").data == {"status": "DELIVERED"}  # type: ignore[union-attr]
    assert opened["command"].get("parcel_status/p-1").data == {"eta": 1}  # type: ignore[union-attr]


def test_a_service_may_not_write_another_ones_collection(opened: dict[str, ServiceStores]) -> None:
    with pytest.raises(NotOwned, match=r"eta may not write parcels/p-1.*command store"):
        opened["eta"].set("parcels/p-1", {"status": "LOST"})
    with pytest.raises(NotOwned, match="command may not write parcel_status"):
        opened["command"].run_transaction(lambda tx: tx.set("parcel_status/p-1", {"eta": 2}))
    # and the reader's connection to another owner's file refuses writes in SQLite itself
    reader = opened["eta"].store("command")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._conn().execute("DELETE FROM documents")


def test_a_reader_never_waits_for_the_owners_write_lock(
    opened: dict[str, ServiceStores], tmp_path: Path
) -> None:
    opened["eta"].set("parcel_status/p-1", {"eta": 1})
    holder = sqlite3.connect(store_file(tmp_path, "eta"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the ETA reactor in the middle of a long commit
    holder.execute("UPDATE documents SET data = data")
    try:
        started = time.perf_counter()
        for n in range(50):
            assert opened["command"].get("parcel_status/p-1") is not None
            opened["command"].set(f"parcels/p-{n}", {"n": n})  # its own store: not held
        assert time.perf_counter() - started < 1.0  # the busy timeout is 5 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_listener_watches_the_owners_file(opened: dict[str, ServiceStores]) -> None:
    async def scenario() -> None:
        listener = opened["command"].watch_document("parcel_status/p-1")
        assert (await asyncio.wait_for(anext(listener), 10)).documents == ()
        await asyncio.to_thread(opened["eta"].set, "parcel_status/p-1", {"eta": 7})
        snapshot = await asyncio.wait_for(anext(listener), 10)
        assert snapshot.documents[0].data == {"eta": 7}
        await listener.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_an_exception_writer_commits_in_that_store(
    opened: dict[str, ServiceStores], tmp_path: Path
) -> None:
    # The command's webhook API writes the client-webhook store (a named exception): its
    # transaction runs in that store, its reads there transactional; group commit sends it there.
    def register(tx: Transaction) -> str:
        found = tx.query(Query("webhook_endpoints").where("client_id", "==", "c-1"))
        tx.create(f"webhook_endpoints/w-{len(found)}", {"client_id": "c-1"})
        return "registered"

    def move(tx: Transaction) -> str:
        tx.set("parcels/p-9", {"status": "IN_TRANSIT"})
        return "moved"

    assert opened["command"].run_transaction(register) == "registered"
    assert opened["command"].run_transactions([move, register]) == ["moved", "registered"]
    assert _documents(tmp_path, "client-webhook") == {
        "webhook_endpoints/w-0",
        "webhook_endpoints/w-1",
    }
    assert "parcels/p-9" in _documents(tmp_path, "command")

    def both(tx: Transaction) -> None:
        tx.set("parcels/p-9", {"status": "DELIVERED"})
        tx.set("webhook_endpoints/w-9", {"client_id": "c-1"})

    with pytest.raises(NotOwned, match="commits in one store"):
        opened["command"].run_transaction(both)


def test_pod_writes_the_status_view_with_its_record(
    opened: dict[str, ServiceStores], tmp_path: Path
) -> None:
    def record(tx: Transaction) -> None:
        tx.set("pod_records/p-1", {"complete": True})
        tx.set("parcel_status/p-1", {"pod_complete": True}, merge=True)
        tx.create("processed_events/pod:e-1", {"at": 1})

    opened["pod"].run_transaction(record)
    assert _documents(tmp_path, "eta") == {
        "pod_records/p-1",
        "parcel_status/p-1",
        "processed_events/pod:e-1",
    }


def test_an_operator_reads_a_ledger_from_whichever_store_has_it(
    opened: dict[str, ServiceStores], tmp_path: Path
) -> None:
    opened["eta"].set("processed_events/eta:e-1", {"at": 1})
    operator = all_stores(tmp_path)
    assert operator.get("processed_events/eta:e-1") is not None
    assert [d.id for d in operator.query(Query("processed_events"))] == ["eta:e-1"]
    with pytest.raises(NotOwned, match="ledger"):
        operator.set("processed_events/x:e-2", {"at": 2})


def test_a_data_directory_from_before_is_refused_then_migrated(tmp_path: Path) -> None:
    legacy = EmbeddedDocumentStore(tmp_path)  # <data_dir>/docstore.sqlite3, every service's
    legacy.set("parcels/p-1", {"status": "DELIVERED"})
    legacy.set("parcel_status/p-1", {"eta": 1})
    legacy.set("workflow_executions/x-1/steps/000000001", {"step": "reserve"})
    cursors = [transport_name(t) for t in CATALOG.triggers]
    for cursor in cursors:
        legacy.changes.advance(cursor, legacy.changes.latest_seq())
    legacy.set("parcels/p-2", {"status": "CREATED"})  # not yet forwarded by Eventarc
    legacy.close()
    with pytest.raises(ConfigError, match="meridian up --data-dir"):
        all_stores(tmp_path)

    assert migrate_legacy(tmp_path, OWNERSHIP, tailed_store(CATALOG), cursors)
    assert not (tmp_path / LEGACY_FILE).exists()
    assert (tmp_path / f"{LEGACY_FILE}.migrated").exists()
    assert _documents(tmp_path, "command") == {"parcels/p-1", "parcels/p-2"}
    assert _documents(tmp_path, "eta") == {"parcel_status/p-1"}
    assert _documents(tmp_path, "platform") == {"workflow_executions/x-1/steps/000000001"}
    command = EmbeddedDocumentStore(tmp_path / "stores", filename="command.sqlite3")
    pending = command.changes.read_changes("eventarc-probe")
    assert [(c.path, c.kind) for c in pending] == [("parcels/p-2", "created")]
    assert not migrate_legacy(tmp_path, OWNERSHIP, tailed_store(CATALOG), cursors)
