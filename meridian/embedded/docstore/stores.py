"""One database per owning service: ``<data_dir>/stores/<store>.sqlite3``, routed per collection.

Each store of the catalog (``stores:``, ``meridian.documents.ownership``) is its own SQLite file
with its own write lock, change log and cursors, so the command service's commits never queue
behind a reactor's. ``ServiceStores`` is the DocumentStore a process gets as one service
(``adapters.document_store(settings, service=...)``): it opens the stores the service writes
read-write and every other store it touches read-only, and sends each path to its owner's file.

Cross-service reads. The issue that split the stores (#24) asks that they go through events,
listeners or the owner's API, never another service's file. On Google Cloud the services read one
Firestore database directly (the command's ``GET`` reads the ETA reactor's status view, the
billing reactor a client's tariff), and the service code must be the same on both backends; so
here such a read opens the owner's file read-only, the one departure from the issue's wording,
kept in this one place: a WAL reader never takes, nor waits for, the writer's lock, so it costs
the owner nothing, and every write through it is refused (``query_only`` connections and
NotOwned). Listeners of another store (the live map's tracking streams, the dispatch console)
watch the owner's file the same way.

Transactions. A transaction commits in one store: the service's own (its home, where its ledgers
are) by default. Reads of other stores inside it are plain reads of their latest commit (no
store's lock covers two files; Firestore's cross-service reads give no more). A function that
writes another store it may write (a named exception: the command's webhook API) is rolled back
and run again in that store; one that writes two stores fails with NotOwned.

``open_stores`` checks the data directory first: one made before the split (a single
``docstore.sqlite3``) is refused with what to do, and ``migrate_legacy`` (run by ``meridian up``)
moves it into the stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from meridian.config import ConfigError
from meridian.documents.ownership import NotOwned, Ownership
from meridian.documents.paths import check_document_path
from meridian.observability import get_logger
from meridian.ports import Document, DocumentStore, JsonValue, Query, Snapshot, Transaction

from . import db
from .store import DEFAULT_INDEXED_FIELDS, EmbeddedDocumentStore, Write

T = TypeVar("T")
log = get_logger(__name__)

STORES_DIR = "stores"
LEGACY_FILE = "docstore.sqlite3"  # the one database of every service, before #24
MIGRATED_SUFFIX = ".migrated"


def store_file(data_dir: Path, store: str) -> Path:
    return data_dir / STORES_DIR / f"{store}.sqlite3"


def all_stores(data_dir: Path) -> ServiceStores:
    """Every store of ``data_dir`` with every collection writable, as the catalog lays them out:
    what an operator's tool, the demo and the tests open (no service's view)."""
    from meridian.catalog import load_catalog

    return ServiceStores(data_dir, Ownership.of(load_catalog()), None)


def check_layout(data_dir: Path) -> None:
    """ConfigError when ``data_dir`` holds a document store from before the split."""
    legacy = data_dir / LEGACY_FILE
    if legacy.exists() and not (data_dir / STORES_DIR).exists():
        raise ConfigError(
            f"{legacy} is a document store from before each service had its own "
            f"({data_dir / STORES_DIR}/<store>.sqlite3): run `meridian up --data-dir {data_dir}` "
            "once, which moves its documents into the stores, or start from a new data directory"
        )


def open_store(
    data_dir: Path,
    store: str,
    *,
    read_only: bool = False,
    indexed_fields: Sequence[str] = DEFAULT_INDEXED_FIELDS,
    ttl_fields: Mapping[str, str] | None = None,
    rereads: bool = True,
) -> EmbeddedDocumentStore:
    """The database of one store (``read_only``: another owner's, opened to read)."""
    check_layout(data_dir)
    return EmbeddedDocumentStore(
        data_dir / STORES_DIR,
        filename=f"{store}.sqlite3",
        indexed_fields=indexed_fields,
        ttl_fields=ttl_fields,
        rereads=rereads,
        read_only=read_only,
    )


class _Elsewhere(Exception):
    """A transaction function wrote a store other than the one it runs in: run it there."""

    def __init__(self, store: str) -> None:
        super().__init__(store)
        self.store = store


class ServiceStores(DocumentStore):
    """The stores as ``service`` sees them: writes to its own, reads of all (None: every store
    writable, for operators' tools, the demo and tests; its ledgers have no home)."""

    def __init__(
        self,
        data_dir: Path,
        ownership: Ownership,
        service: str | None,
        *,
        ttl_fields: Mapping[str, str] | None = None,
        rereads: bool = True,
    ) -> None:
        check_layout(data_dir)
        self.data_dir = data_dir
        self.ownership = ownership
        self.service = service
        self.home = ownership.homes.get(service) if service else None
        self._writable = ownership.writable(service) if service else ownership.stores
        self._ttl_fields = dict(ttl_fields or {})
        self._rereads = rereads
        self._open: dict[str, EmbeddedDocumentStore] = {}
        if self.home is not None:
            self.store(self.home)  # created and indexed at start, as a single store was

    def store(self, name: str) -> EmbeddedDocumentStore:
        """The database of store ``name``, opened on first use (read-only if not ours)."""
        opened = self._open.get(name)
        if opened is None:
            if name not in self.ownership.stores:
                raise NotOwned(f"no store {name!r} in {self.ownership.source}")
            opened = self._open[name] = open_store(
                self.data_dir,
                name,
                read_only=name not in self._writable,
                ttl_fields=self._ttl_fields,
                rereads=self._rereads,
            )
        return opened

    def sweep_expired(self, now: datetime | None = None) -> int:
        """Firestore's TTL deletes in every store this view writes (the platform's sweeper opens
        each store as its own)."""
        return sum(self.store(name).sweep_expired(now) for name in sorted(self._writable))

    def close(self) -> None:
        for opened in self._open.values():
            opened.close()
        self._open.clear()

    # routing -------------------------------------------------------------------------------

    def _store_name(self, path: str) -> str:
        name = self.ownership.store_of(path)
        if name is not None:
            return name
        if self.home is None:
            raise NotOwned(
                f"{path} is a ledger, kept in the store of the service that writes it: "
                "open the stores as that service"
            )
        return self.home

    def _reading(self, path: str) -> EmbeddedDocumentStore:
        return self.store(self._store_name(path))

    def _writing(self, path: str) -> EmbeddedDocumentStore:
        check_document_path(path)  # a malformed path is refused as such, whoever owns it
        name = self._store_name(path)
        if name not in self._writable:
            raise self.ownership.refuse(self.service or "operator", path, name)
        return self.store(name)

    # reads ---------------------------------------------------------------------------------

    def _everywhere(self, path: str) -> bool:
        """A ledger read by an operator, who has no home store: it is looked for in each."""
        return self.home is None and self.ownership.store_of(path) is None

    def get(self, path: str) -> Document | None:
        check_document_path(path)
        if self._everywhere(path):
            found = (self.store(n).get(path) for n in sorted(self.ownership.stores))
            return next((d for d in found if d is not None), None)
        return self._reading(path).get(path)

    def get_all(self, paths: Sequence[str]) -> dict[str, Document | None]:
        by_store: dict[str, list[str]] = {}
        for path in paths:
            if self._everywhere(path):
                by_store.setdefault("", []).append(path)
            else:
                by_store.setdefault(self._store_name(path), []).append(path)
        found: dict[str, Document | None] = {p: self.get(p) for p in by_store.pop("", [])}
        for name, some in by_store.items():
            found.update(self.store(name).get_all(some))
        return {path: found[path] for path in dict.fromkeys(paths)}

    def query(self, query: Query) -> list[Document]:
        if self._everywhere(query.collection):
            return [d for n in sorted(self.ownership.stores) for d in self.store(n).query(query)]
        return self._reading(query.collection).query(query)

    def watch_document(self, path: str) -> AsyncIterator[Snapshot]:
        return self._reading(path).watch_document(path)

    def watch_query(self, query: Query) -> AsyncIterator[Snapshot]:
        return self._reading(query.collection).watch_query(query)

    # writes --------------------------------------------------------------------------------

    def create(self, path: str, data: Mapping[str, JsonValue]) -> Document:
        return self._writing(path).create(path, data)

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> Document:
        return self._writing(path).set(path, data, merge)

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> Document:
        return self._writing(path).update(path, fields)

    def delete(self, path: str) -> None:
        self._writing(path).delete(path)

    def batch_write(self, writes: Sequence[Write]) -> None:
        if not writes:
            return
        stores = {self._writing(path).file for _, path, _ in writes}
        if len(stores) > 1:
            raise NotOwned(
                f"a batch commits in one store; this one writes {', '.join(sorted(map(str, stores)))}"
            )
        self._writing(writes[0][1]).batch_write(writes)

    # transactions --------------------------------------------------------------------------

    def run_transaction(self, function: Callable[[Transaction], T], max_attempts: int = 5) -> T:
        target = self.home
        tried: list[str] = []
        while True:
            if target is None:
                try:  # an operator has no home store: the first one the function touches
                    return function(_Routed(self, None))  # it touched none: only reads
                except _Elsewhere as found:
                    target = found.store
            tried.append(target)
            try:
                return self.store(target).run_transaction(
                    lambda tx, t=target: function(_Routed(self, t, tx)),  # type: ignore[misc]
                    max_attempts,
                )
            except _Elsewhere as moved:
                if moved.store in tried:
                    raise NotOwned(
                        f"a transaction commits in one store; this one writes {tried[0]} and "
                        f"{moved.store}: split it, or write one through its owner"
                    ) from None
                target = moved.store

    def run_transactions(
        self, functions: Sequence[Callable[[Transaction], T]], max_attempts: int = 5
    ) -> list[T | BaseException]:
        """Group commit (``EmbeddedDocumentStore.run_transactions``) in the home store; a
        function that writes another store of ours is run again there on its own."""
        if self.home is None:
            return [self._outcome(f, max_attempts) for f in functions]
        home = self.home
        outcomes = self.store(home).run_transactions(
            [lambda tx, f=f: f(_Routed(self, home, tx)) for f in functions],  # type: ignore[misc]
            max_attempts,
        )
        return [
            self._outcome(f, max_attempts) if isinstance(o, _Elsewhere) else o
            for f, o in zip(functions, outcomes, strict=True)
        ]

    def _outcome(self, function: Callable[[Transaction], T], attempts: int) -> T | BaseException:
        try:
            return self.run_transaction(function, attempts)
        except Exception as e:
            return e


class _Routed(Transaction):
    """A transaction bound to store ``bound`` (``tx``); a path of another store is read from
    its latest commit, and a write to it moves the transaction there (``_Elsewhere``)."""

    def __init__(self, stores: ServiceStores, bound: str | None, tx: Transaction | None = None):
        self._stores, self._bound, self._tx = stores, bound, tx

    def _here(self, path: str, write: bool) -> bool:
        if self._bound is None:
            name = self._stores._store_name(path)
        else:
            name = self._stores.ownership.store_of(path) or self._bound
        if name == self._bound:
            return True
        if name in self._stores._writable:
            if write or self._bound is None:
                raise _Elsewhere(name)
            return False
        if write:
            raise self._stores.ownership.refuse(self._stores.service or "operator", path, name)
        return False

    def get(self, path: str) -> Document | None:
        if self._here(path, write=False):
            assert self._tx is not None
            return self._tx.get(path)
        return self._stores.get(path)

    def query(self, query: Query) -> list[Document]:
        if self._here(query.collection, write=False):
            assert self._tx is not None
            return self._tx.query(query)
        return self._stores.query(query)

    def _bound_tx(self, path: str) -> Transaction:
        self._here(path, write=True)
        assert self._tx is not None
        return self._tx

    def create(self, path: str, data: Mapping[str, JsonValue]) -> None:
        self._bound_tx(path).create(path, data)

    def set(self, path: str, data: Mapping[str, JsonValue], merge: bool = False) -> None:
        self._bound_tx(path).set(path, data, merge)

    def update(self, path: str, fields: Mapping[str, JsonValue]) -> None:
        self._bound_tx(path).update(path, fields)

    def delete(self, path: str) -> None:
        self._bound_tx(path).delete(path)


# The data directory of an earlier version ---------------------------------------------------


def migrate_legacy(
    data_dir: Path, ownership: Ownership, tailed: str, eventarc_cursors: Sequence[str]
) -> bool:
    """Move the documents of ``<data_dir>/docstore.sqlite3`` (one database for every service,
    before #24) into each collection's store, and rename it ``docstore.sqlite3.migrated``.

    Documents keep their times and expiry; the change log is not copied (its history was read
    already), except the changes of store ``tailed`` (the command's, whose collections the
    triggers watch) that the Eventarc cursors ``eventarc_cursors`` had not forwarded yet, so no
    event is lost (a CloudEvent's id is derived from its change, so one forwarded twice is
    deduplicated downstream). Returns whether
    there was anything to migrate. Run before the services start (``meridian up``)."""
    legacy = data_dir / LEGACY_FILE
    if not legacy.exists() or (data_dir / STORES_DIR).exists():
        return False
    staging = data_dir / f"{STORES_DIR}.partial"
    staging.mkdir(exist_ok=True)
    source = sqlite3.connect(legacy)
    try:
        collections = [r[0] for r in source.execute("SELECT DISTINCT collection FROM documents")]
        cursors = [
            r[0]
            for r in source.execute(
                f"SELECT seq FROM cursors WHERE name IN ({', '.join('?' * len(eventarc_cursors))})",
                list(eventarc_cursors),
            )
        ]
    finally:
        source.close()
    by_store: dict[str, list[str]] = {}
    for collection in collections:
        name = ownership.store_of(collection)  # NotOwned names an undeclared collection
        if name is None:
            continue  # ledgers: entries of processed events, dropped as any expired entry would be
        by_store.setdefault(name, []).append(collection)
    forwarded = min(cursors) if len(cursors) == len(eventarc_cursors) else 0
    moved = 0
    for name in sorted(ownership.stores):
        EmbeddedDocumentStore(staging, filename=f"{name}.sqlite3").close()
        conn = db.connect(staging / f"{name}.sqlite3", 5000)
        try:
            conn.execute("ATTACH DATABASE ? AS legacy", (str(legacy),))
            roots = by_store.get(name, [])
            match = " OR ".join(["collection = ? OR collection LIKE ?"] * len(roots)) or "0"
            params = [p for c in roots for p in (c, f"{c}/%")]

            after = forwarded if name == tailed else 2**62

            def copy(
                c: sqlite3.Connection,
                match: str = match,
                params: list[str] = params,
                after: int = after,
            ) -> int:
                count = c.execute(
                    "INSERT INTO documents SELECT * FROM legacy.documents WHERE " + match, params
                ).rowcount
                c.execute(
                    "INSERT INTO changes (path, collection, kind, old_data, new_data,"
                    " update_mask, create_time, commit_time) SELECT path, collection, kind,"
                    " old_data, new_data, update_mask, create_time, commit_time FROM"
                    f" legacy.changes WHERE seq > ? AND ({match}) ORDER BY seq",
                    [after, *params],
                )
                return count

            moved += db.in_write_transaction(conn, copy)
            conn.execute("DETACH DATABASE legacy")
        finally:
            conn.close()
    staging.rename(data_dir / STORES_DIR)
    legacy.rename(legacy.with_name(LEGACY_FILE + MIGRATED_SUFFIX))
    for suffix in ("-wal", "-shm"):
        legacy.with_name(LEGACY_FILE + suffix).unlink(missing_ok=True)
    log.info("document store split into one per service", documents=moved, stores=len(by_store))
    return True
