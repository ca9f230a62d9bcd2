"""The DocumentStore contract on the Google adapter against Google's own Firestore emulator
(``gcloud emulators firestore start``; ``gcloud_firestore.py``), which, unlike the npm emulator of
``test_docstore_firestore.py``, locks documents in transactions and aborts them on contention:
the retry path of ``FirestoreDocumentStore.run_transaction`` runs for real here.

Contention is produced as Firestore produces it: another client's transaction reads the
document and holds its lock, so this store's commit waits out the emulator's lock timeout (2 s)
and is ABORTED; it ends when the holder rolls back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from google.cloud import firestore

from meridian.gcp.firestore import Backoff, FirestoreDocumentStore
from meridian.ports import DocumentStore

from .docstore_contract import DocumentStoreContract
from .gcloud_firestore import PROJECT, emulator_client, google_firestore_emulator

# The contention tests wait out the emulator's 2 s lock timeout on every attempt; short pauses
# between attempts keep them at seconds (the concurrency test keeps the production Backoff).
QUICK = Backoff(initial_s=0.05, maximum_s=0.2)


@pytest.fixture(scope="module")
def google_emulator() -> Iterator[str]:
    with google_firestore_emulator() as host:
        yield host


class _Holder:
    """Another client's transaction that has read ``path`` and keeps it locked until released."""

    def __init__(self, host: str, path: str) -> None:
        self.client = emulator_client(host)
        self.locked = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(path,), daemon=True)

    def _hold(self, path: str) -> None:
        @firestore.transactional
        def hold(transaction: Any) -> None:
            self.client.document(path).get(transaction=transaction)
            self.locked.set()
            self.release.wait(60)
            raise _Released  # rolls the holder's transaction back, freeing the lock

        with suppress(_Released):
            hold(self.client.transaction(max_attempts=1))

    def __enter__(self) -> _Holder:
        self.thread.start()
        assert self.locked.wait(30), "the holder's transaction never read the document"
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.thread.join(30)
        self.client.close()


class _Released(Exception):
    pass


class TestGoogleFirestoreEmulator(DocumentStoreContract):
    @pytest.fixture(autouse=True)
    def _emulator(self, google_emulator: str) -> Iterator[None]:
        self.host = google_emulator
        self.clients: list[FirestoreDocumentStore] = []
        yield
        for client in self.clients:
            client.close()

    def make_store(self, ttl_fields: Mapping[str, str]) -> DocumentStore:
        client = FirestoreDocumentStore(
            PROJECT, ttl_fields=ttl_fields, client=emulator_client(self.host)
        )
        self.clients.append(client)
        return client

    def remote_write(self, path: str, data: Mapping[str, Any]) -> None:
        # Another client: its write reaches the listener only through the emulator's Listen.
        other = FirestoreDocumentStore(PROJECT, client=emulator_client(self.host))
        other.set(path, data)
        other.close()

    @contextmanager
    def contention(
        self, store: DocumentStore, release_after_failures: int | None
    ) -> Iterator[None]:
        assert isinstance(store, FirestoreDocumentStore)
        # The contract's contention tests transact on counters/c of their own collection.
        path = f"{self.col('counters')}/c"
        previous = store.backoff
        store.backoff = QUICK
        with _Holder(self.host, path) as holder:
            failures: list[logging.LogRecord] = []

            class Release(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    failures.append(record)
                    if len(failures) == release_after_failures:
                        holder.release.set()

            handler = Release(logging.WARNING)
            logger = logging.getLogger("meridian.gcp.firestore")
            logger.addHandler(handler)
            try:
                yield
            finally:
                logger.removeHandler(handler)
                store.backoff = previous
