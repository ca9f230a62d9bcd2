"""The DocumentStore contract on the unit tests' fake (``tests.fakes.FakeDocumentStore``), so a
unit test on the fake sees what the adapters do: the same path, field, size and query rules,
Firestore's update and merge, transactions that read before they write, retried on contention."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from meridian.ports import DocumentStore
from tests.fakes import FakeDocumentStore

from .docstore_contract import DocumentStoreContract

NO_LISTENERS = pytest.mark.skip(
    reason="the fake has no listeners (watch_document/watch_query raise NotImplementedError): it "
    "holds documents in one process's memory and has no change feed to tail; code that listens "
    "is tested on the embedded store, whose listeners this contract runs across processes"
)


class TestFakeDocumentStore(DocumentStoreContract):
    @pytest.fixture(autouse=True)
    def _no_store_yet(self) -> None:
        self.first: FakeDocumentStore | None = None

    def make_store(self, ttl_fields: Mapping[str, str]) -> DocumentStore:
        # The first store of a test is the backend; later ones are more clients of it.
        if self.first is None:
            self.first = FakeDocumentStore()
            return self.first
        return self.first.another_client()

    def remote_write(self, path: str, data: Mapping[str, Any]) -> None:
        assert self.first is not None
        self.first.another_client().set(path, data)

    @contextmanager
    def contention(
        self, store: DocumentStore, release_after_failures: int | None
    ) -> Iterator[None]:
        assert isinstance(store, FakeDocumentStore)
        store.contended_attempts = release_after_failures
        try:
            yield
        finally:
            store.contended_attempts = 0

    @pytest.mark.skip(
        reason="TTL expiry is observed here through a listener, which the fake does not have "
        "(see NO_LISTENERS), and sweep_expired is each adapter's own, not the port's"
    )
    def test_ttl_sweep_deletes_expired_documents_as_normal_deletes(
        self, store: DocumentStore
    ) -> None:
        raise AssertionError("skipped")

    @NO_LISTENERS
    def test_document_listener_gets_the_snapshot_then_each_change(
        self, store: DocumentStore
    ) -> None:
        raise AssertionError("skipped")

    @NO_LISTENERS
    def test_listener_of_a_missing_document_sees_it_created(self, store: DocumentStore) -> None:
        raise AssertionError("skipped")

    @NO_LISTENERS
    def test_listener_sees_a_remote_write(self, store: DocumentStore) -> None:
        raise AssertionError("skipped")

    @NO_LISTENERS
    def test_query_listener_tracks_membership(self, store: DocumentStore) -> None:
        raise AssertionError("skipped")
