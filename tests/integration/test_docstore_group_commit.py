"""Group commit and the decoded-document cache on the embedded store, at the edges the contract
suite cannot reach: a failure after a function's rows went in, a refused write-without-read."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meridian.domain.errors import AlreadyExists
from meridian.embedded.docstore import EmbeddedDocumentStore, changelog
from meridian.ports import Transaction


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedDocumentStore]:
    store = EmbeddedDocumentStore(tmp_path)
    yield store
    store.close()


def test_a_function_failing_after_its_rows_went_in_is_rolled_back_alone(
    store: EmbeddedDocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = changelog.record

    def failing_record(conn: sqlite3.Connection, changes: list[tuple[Any, ...]]) -> None:
        # The documents of parcels/bad are written by now; its change records fail.
        if any(change[0] == "parcels/bad" for change in changes):
            raise sqlite3.OperationalError("disk I/O error")
        record(conn, changes)

    monkeypatch.setattr(changelog, "record", failing_record)
    runs: Counter[str] = Counter()

    def write(name: str) -> Callable[[Transaction], str]:
        def work(tx: Transaction) -> str:
            runs[name] += 1
            tx.set(f"parcels/{name}", {"status": "DELIVERED"})
            return name

        return work

    def refused(tx: Transaction) -> None:
        runs["refused"] += 1
        tx.set("parcels/refused", {"status": "DELIVERED"})
        raise RuntimeError("refused before writing")

    before = store.changes.latest_seq()
    outcomes = store.run_transactions([write("a"), refused, write("bad"), write("b")])

    assert outcomes[0] == "a" and outcomes[3] == "b"
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[2], sqlite3.OperationalError)
    assert store.get("parcels/bad") is None and store.get("parcels/refused") is None
    assert store.get("parcels/a") is not None and store.get("parcels/b") is not None
    changes = store.changes.read_changes("eventarc", limit=100)
    assert [c.path for c in changes if c.seq > before] == ["parcels/a", "parcels/b"]
    # The group ran once without savepoints and, after the partly written failure, once with.
    assert runs == {"a": 2, "refused": 2, "bad": 2, "b": 1}


def test_a_group_whose_functions_refuse_before_writing_runs_once(
    store: EmbeddedDocumentStore,
) -> None:
    store.create("parcels/taken", {"n": 0})
    runs: Counter[str] = Counter()

    def create(name: str) -> Callable[[Transaction], str]:
        def work(tx: Transaction) -> str:
            runs[name] += 1
            tx.set(f"parcels/{name}-log", {"of": name})
            tx.create(f"parcels/{name}", {"n": 1})
            return name

        return work

    outcomes = store.run_transactions([create("a"), create("taken"), create("b")])
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], AlreadyExists)
    assert store.get("parcels/taken-log") is None  # refused whole, its first write included
    assert runs == {"a": 1, "taken": 1, "b": 1}


@pytest.mark.parametrize(
    "write",
    [
        lambda tx: tx.set("live_map/veh-1", {"at": {"lon": 2.0}}, merge=True),
        lambda tx: tx.update("live_map/veh-1", {"at.lon": 2.0}),
        lambda tx: tx.set("live_map/veh-1", {"at": {"lon": 2.0}}),
    ],
)
def test_a_write_without_a_read_leaves_the_decoded_document_as_stored(
    store: EmbeddedDocumentStore, write: Callable[[Transaction], None]
) -> None:
    # The first transaction leaves the document decoded in the store's cache; the second one
    # writes it without reading it (its old value comes from that cache), then is refused.
    store.run_transaction(lambda tx: tx.set("live_map/veh-1", {"at": {"lat": 1.0}}))
    store.create("live_map/taken", {"n": 0})

    def refused(tx: Transaction) -> None:
        write(tx)
        tx.create("live_map/taken", {"n": 1})

    with pytest.raises(AlreadyExists):
        store.run_transaction(refused)
    seen = store.run_transaction(lambda tx: tx.get("live_map/veh-1"))
    assert seen is not None and seen.data == {"at": {"lat": 1.0}}

    store.run_transaction(write)
    after = store.get("live_map/veh-1")
    assert after is not None
    change = store.changes.read_changes("eventarc", limit=100)[-1]
    assert change.old_data == {"at": {"lat": 1.0}} and change.new_data == after.data
