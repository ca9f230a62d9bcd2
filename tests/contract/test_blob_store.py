"""The BlobStore contract on every adapter: files on disk (embedded), Cloud Storage against a
stand-in of Google's ``storage.Client`` (no network), and the unit tests' fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian.embedded.external.local import LocalBlobStore
from meridian.gcp.external import GcsBlobStore
from meridian.ports import BlobStore
from tests.fakes_reactors import FakeBlobStore

from .external_contract import BlobStoreContract
from .google_stand_ins import StubStorageClient


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _root(self, tmp_path: Path) -> None:
        self.root = tmp_path / "blobs"
        (tmp_path / "elsewhere").write_bytes(b"not a blob")
        self.outside = (tmp_path / "elsewhere").as_uri()

    def make_blobs(self) -> BlobStore:
        return LocalBlobStore(self.root)

    def foreign_reference(self) -> str:
        return self.outside  # a file that exists, outside the store


class TestGcsBlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _storage(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {("other-bucket", "pod/p-1.jpg"): b"x"}

    def make_blobs(self) -> BlobStore:
        return GcsBlobStore("meridian-pod", client=StubStorageClient(self.objects))

    def foreign_reference(self) -> str:
        return "gs://other-bucket/pod/p-1.jpg"  # an object that exists, in another bucket


class TestFakeBlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _memory(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def make_blobs(self) -> BlobStore:
        fake = FakeBlobStore()
        fake.blobs = self.blobs  # another client of the same memory
        return fake

    def foreign_reference(self) -> str:
        return "gs://meridian-pod/pod/p-1.jpg"
