"""Each service writes only the collections it owns (schemas/catalog.yaml, stores:), on both
backends: the exceptions are listed here exactly, every collection the code names is declared,
every bootstrap opens the store as its own service, and both adapters refuse a foreign write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.config import Settings
from meridian.documents.ownership import GuardedDocumentStore, NotOwned, Ownership
from meridian.ports import Transaction
from tests.fakes import FakeDocumentStore

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()

# Writers of another service's store, with the reason in the catalog. A new one is a decision,
# made here and in the catalog together: its writes queue on the owner's write lock.
EXCEPTIONS = {
    ("command", "dispatch"),  # the saga moves parcels and the fleet with its routes
    ("eta", "pod"),  # pod_complete on the status view, with the POD record
    ("client-webhook", "command"),  # the webhook API writes endpoints, replay their deliveries
}


def test_the_exceptions_are_exactly_these() -> None:
    found = {(name, w) for name, store in CATALOG.stores.items() for w in store.exceptions}
    assert found == EXCEPTIONS
    for name, writer in found:
        assert len(CATALOG.stores[name].exceptions[writer]) > 40, "say why, in a sentence"


_CODE = [
    "meridian/app",
    "meridian/embedded/workflows",
    "meridian/gcp/workflows.py",
    "services",
    "pipelines",
]
_CONSTANT = re.compile(r'^([A-Z][A-Z_]*)(?:: str)? = "([a-z][a-z0-9_]*)"', re.M)
_LITERAL_PATH = re.compile(r'[(\s]f"([a-z][a-z0-9_]*)/\{')


def _named_collections() -> dict[str, str]:
    """Every collection the code writes paths of: a constant used as a path's first segment
    (``f"{PARCELS}/..."``, ``Query(PARCELS)``), or a literal one (``f"parcels/{id}"``)."""
    found: dict[str, str] = {}
    files = [
        p for c in _CODE for p in ((ROOT / c).rglob("*.py") if (ROOT / c).is_dir() else [ROOT / c])
    ]
    for file in files:
        text = file.read_text()
        where = str(file.relative_to(ROOT))
        for name, value in _CONSTANT.findall(text):
            if re.search(rf'f"\{{{name}\}}/|Query\({name}\b|\(f"\{{{name}\}}', text):
                found.setdefault(value, where)
        for value in _LITERAL_PATH.findall(text):
            found.setdefault(value, where)
    return found


def test_every_collection_the_code_names_is_in_a_store() -> None:
    ownership = Ownership.of(CATALOG)
    named = _named_collections()
    assert {"parcels", "parcel_status", "live_map", "webhook_deliveries"} <= set(named)
    undeclared = {}
    for collection, where in named.items():
        if collection in ("pod", "projects", "documents", "schemas"):
            continue  # blob names and resource names, not collections
        try:
            ownership.store_of(collection)
        except NotOwned:
            undeclared[collection] = where
    assert not undeclared, f"add these to stores: in schemas/catalog.yaml: {undeclared}"


_OPENED_AS = re.compile(
    r'document_store\(\s*(?:self\.)?settings,\s*service=(?:"([a-z-]+)"|service)'
)


@pytest.mark.parametrize("package", sorted({s.package for s in CATALOG.services.values()}), ids=str)
def test_each_bootstrap_opens_the_store_as_its_own_service(package: str) -> None:
    bootstrap = ROOT / package.replace(".", "/") / "bootstrap.py"
    text = bootstrap.read_text()
    if "document_store(" not in text:
        return  # uses no document store (the event publisher)
    named = {m for m in _OPENED_AS.findall(text)}
    ours = {n for n, s in CATALOG.services.items() if s.package == package}
    assert named, f"{bootstrap}: open the store with service=<its catalog name>"
    assert {n for n in named if n} <= ours, f"{bootstrap} opens the store as {named}, not {ours}"
    assert "document_store(settings)" not in text and "document_store(self.settings)" not in text


@pytest.fixture
def firestore(monkeypatch: pytest.MonkeyPatch) -> FakeDocumentStore:
    """The gcp adapter with the fake in place of Firestore's client."""
    import meridian.gcp.firestore

    fake = FakeDocumentStore()
    monkeypatch.setattr(meridian.gcp.firestore, "FirestoreDocumentStore", lambda project: fake)
    return fake


def test_the_gcp_adapter_refuses_a_foreign_write(firestore: FakeDocumentStore) -> None:
    store = adapters.document_store(Settings(backend="gcp"), service="eta")
    assert isinstance(store, GuardedDocumentStore) and store.inner is firestore
    store.set("parcel_status/p-1", {"eta": 1})  # its own
    store.set("processed_events/eta:e-1", {"at": 1})  # its ledger
    assert store.get("parcels/p-1") is None  # reads anything
    with pytest.raises(NotOwned, match="command store"):
        store.set("parcels/p-1", {"status": "DELIVERED"})

    def foreign(tx: Transaction) -> None:
        tx.update("parcels/p-1", {"status": "DELIVERED"})

    with pytest.raises(NotOwned):
        store.run_transaction(foreign)
    with pytest.raises(NotOwned, match="no store"):
        store.create("scratch/x", {})
    assert firestore.get("parcels/p-1") is None


def test_the_embedded_adapter_refuses_a_foreign_write(tmp_path: Path) -> None:
    store = adapters.document_store(Settings(data_dir=tmp_path), service="eta")
    store.set("parcel_status/p-1", {"eta": 1})
    with pytest.raises(NotOwned, match="command store"):
        store.set("parcels/p-1", {"status": "DELIVERED"})

    def foreign(tx: Transaction) -> None:
        tx.update("parcels/p-1", {"status": "DELIVERED"})

    with pytest.raises(NotOwned):
        store.run_transaction(foreign)


@pytest.mark.parametrize("service", sorted(CATALOG.services))
def test_a_service_writes_only_its_stores_on_both_backends(
    service: str, tmp_path: Path, firestore: FakeDocumentStore
) -> None:
    ownership = Ownership.of(CATALOG)
    mine = ownership.writable(service)
    for backend in ("gcp", "embedded"):
        store = adapters.document_store(
            Settings(backend=backend, data_dir=tmp_path / backend), service=service
        )
        for name, spec in CATALOG.stores.items():
            path = f"{spec.collections[0]}/probe"
            if name in mine:
                store.set(path, {"by": service})
            else:
                with pytest.raises(NotOwned):
                    store.set(path, {"by": service})
