"""The DocumentStore contract per database: each store of the catalog opened as its owner
(``ServiceStores``, one SQLite file per store), and the routing between them (#24).

The contract's collections (``name_<suffix>``) are given to the owner under test, beside the
catalog's own, so every contract test runs through the routing store into that owner's file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meridian.catalog import load_catalog
from meridian.documents.ownership import Ownership
from meridian.domain.errors import Conflict
from meridian.embedded.docstore.stores import ServiceStores, store_file
from meridian.ports import DocumentStore, Query, Transaction

from .docstore_contract import DocumentStoreContract
from .test_docstore_embedded import write_lock_held

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()


@dataclass(frozen=True)
class _WithContractCollections(Ownership):
    suffix: str = ""
    owner: str = ""

    def store_of(self, path: str) -> str | None:
        if path.partition("/")[0].endswith(f"_{self.suffix}"):
            return self.owner
        return super().store_of(path)


@pytest.fixture(params=sorted(CATALOG.stores))
def owner(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestEachStoreAsItsOwner(DocumentStoreContract):
    @pytest.fixture(autouse=True)
    def _as_owner(self, tmp_path: Path, owner: str, _names: None) -> None:
        self.data_dir, self.owner = tmp_path, owner
        base = Ownership.of(CATALOG)
        self.ownership = _WithContractCollections(
            base.owners, base.ledgers, base.writers, base.homes, base.source, self.suffix, owner
        )

    def make_store(self, ttl_fields: Mapping[str, str]) -> DocumentStore:
        return ServiceStores(self.data_dir, self.ownership, self.owner, ttl_fields=ttl_fields)

    def remote_write(self, path: str, data: Mapping[str, Any]) -> None:
        code = (
            "import json, sys; from pathlib import Path;"
            "from meridian.embedded.docstore.stores import open_store;"
            "open_store(Path(sys.argv[1]), sys.argv[2]).set(sys.argv[3], json.loads(sys.argv[4]))"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(self.data_dir), self.owner, path, json.dumps(data)],
            check=True,
            cwd=ROOT,
        )

    @contextmanager
    def contention(
        self, store: DocumentStore, release_after_failures: int | None
    ) -> Iterator[None]:
        assert isinstance(store, ServiceStores)
        with write_lock_held(store.store(self.owner), release_after_failures):
            yield

    def test_writes_land_in_the_owners_file_alone(self, store: DocumentStore) -> None:
        store.set(f"{self.col('things')}/a", {"n": 1})
        for name in CATALOG.stores:
            file = store_file(self.data_dir, name)
            if not file.exists():
                continue
            with sqlite3.connect(file) as conn:
                found = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            assert found == (1 if name == self.owner else 0), name

    def test_group_commit_runs_in_the_owners_store(self, store: DocumentStore) -> None:
        assert isinstance(store, ServiceStores)
        counters = self.col("counters")

        def write(name: str) -> Callable[[Transaction], str]:
            def work(tx: Transaction) -> str:
                tx.create(f"{counters}/{name}", {"n": 1})
                return name

            return work

        def refused(tx: Transaction) -> None:
            tx.create(f"{counters}/refused", {"n": 1})
            raise Conflict("no")

        outcomes = store.run_transactions([write("a"), refused, write("b")])
        assert outcomes[0] == "a" and outcomes[2] == "b" and isinstance(outcomes[1], Conflict)
        assert {d.id for d in store.store(self.owner).query(Query(counters))} == {"a", "b"}
