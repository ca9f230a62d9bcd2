"""Who may write which collections: the catalog's ``stores:``, enforced on every backend.

Each top-level collection belongs to one store, named after its owning service; a store's
writers are its owner, the owner's roles and the named exceptions (``schemas/catalog.yaml``).
The ledgers (processed events, request keys) are in every writer's own store. A service writes
only the stores it is a writer of: ``GuardedDocumentStore`` refuses any other write with
NotOwned, at the cost of one dictionary and one set lookup per write. ``adapters.document_store``
wraps the Firestore adapter in it (one database, ownership per collection); on the embedded
runtime ``meridian.embedded.docstore.stores`` applies the same ``Ownership`` while it routes each
collection to its owner's file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from meridian.catalog import Catalog
from meridian.domain.errors import MeridianError
from meridian.ports import Document, DocumentStore, JsonValue, Query, Snapshot, Transaction

T = TypeVar("T")


class NotOwned(MeridianError):
    """A write to a collection the writing service does not own, or to an undeclared one."""


@dataclass(frozen=True)
class Ownership:
    """The catalog's ``stores:`` as lookups: collection to store, writer to the stores it writes."""

    owners: Mapping[str, str]  # top-level collection -> store
    ledgers: frozenset[str]
    writers: Mapping[str, frozenset[str]]  # writer -> the stores it writes
    homes: Mapping[str, str]  # writer -> the store of its ledgers
    source: str  # the catalog file, for messages

    @classmethod
    def of(cls, catalog: Catalog) -> Ownership:
        names = {w for store in catalog.stores.values() for w in store.all_writers}
        return cls(
            owners={c: name for name, store in catalog.stores.items() for c in store.collections},
            ledgers=frozenset(catalog.ledgers),
            writers={w: catalog.stores_written_by(w) for w in names},
            homes={w: home for w in names if (home := catalog.home_store(w)) is not None},
            source=str(catalog.path),
        )

    @property
    def stores(self) -> frozenset[str]:
        return frozenset(self.owners.values())

    def store_of(self, path: str) -> str | None:
        """The store of the document or collection at ``path`` (its root collection's); None
        for a ledger, which is in the store of whoever writes it."""
        root = path.partition("/")[0]
        store = self.owners.get(root)
        if store is None and root not in self.ledgers:
            raise NotOwned(
                f"collection {root!r} is in no store of {self.source}: add it to the stores: "
                "section, under the service that writes it"
            )
        return store

    def writable(self, writer: str) -> frozenset[str]:
        return self.writers.get(writer, frozenset())

    def refuse(self, writer: str, path: str, store: str) -> NotOwned:
        return NotOwned(
            f"{writer} may not write {path}: {path.partition('/')[0]} belongs to the {store} "
            f"store ({self.source}, stores.{store}); change it through {store}'s API or events, "
            f"or, if {writer} must write it, name {writer} under stores.{store}.exceptions with why"
        )

    def check_write(self, writer: str, path: str) -> None:
        store = self.store_of(path)
        if store is None:
            if writer not in self.homes:
                raise NotOwned(
                    f"{writer} may not write the ledger {path}: it writes no store of its own "
                    f"({self.source}, stores:)"
                )
        elif store not in self.writable(writer):
            raise self.refuse(writer, path, store)


class GuardedTransaction(Transaction):
    def __init__(self, inner: Transaction, ownership: Ownership, writer: str) -> None:
        self._inner, self._ownership, self._writer = inner, ownership, writer

    def get(self, path: str) -> Document | None:
        return self._inner.get(path)

    def query(self, query: Query) -> list[Document]:
        return self._inner.query(query)

    def create(self, path: str, data: Mapping[str, JsonValue]) -> None:
        self._ownership.check_write(self._writer, path)
        self._inner.create(path, data)

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> None:
        self._ownership.check_write(self._writer, path)
        self._inner.set(path, data, merge)

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> None:
        self._ownership.check_write(self._writer, path)
        self._inner.update(path, fields)

    def delete(self, path: str) -> None:
        self._ownership.check_write(self._writer, path)
        self._inner.delete(path)


class GuardedDocumentStore(DocumentStore):
    """``inner`` as ``writer`` may use it: reads pass, writes outside its stores raise NotOwned."""

    def __init__(self, inner: DocumentStore, ownership: Ownership, writer: str) -> None:
        self.inner, self.ownership, self.writer = inner, ownership, writer

    def get(self, path: str) -> Document | None:
        return self.inner.get(path)

    def get_all(self, paths: Sequence[str]) -> dict[str, Document | None]:
        return self.inner.get_all(paths)

    def query(self, query: Query) -> list[Document]:
        return self.inner.query(query)

    def create(self, path: str, data: Mapping[str, JsonValue]) -> Document:
        self.ownership.check_write(self.writer, path)
        return self.inner.create(path, data)

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> Document:
        self.ownership.check_write(self.writer, path)
        return self.inner.set(path, data, merge)

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> Document:
        self.ownership.check_write(self.writer, path)
        return self.inner.update(path, fields)

    def delete(self, path: str) -> None:
        self.ownership.check_write(self.writer, path)
        self.inner.delete(path)

    def batch_write(
        self, writes: Sequence[tuple[str, str, Mapping[str, JsonValue] | None]]
    ) -> None:
        for _, path, _ in writes:
            self.ownership.check_write(self.writer, path)
        self.inner.batch_write(writes)

    def run_transaction(self, function: Callable[[Transaction], T], max_attempts: int = 5) -> T:
        return self.inner.run_transaction(
            lambda tx: function(GuardedTransaction(tx, self.ownership, self.writer)), max_attempts
        )

    def watch_document(self, path: str) -> AsyncIterator[Snapshot]:
        return self.inner.watch_document(path)

    def watch_query(self, query: Query) -> AsyncIterator[Snapshot]:
        return self.inner.watch_query(query)
