"""Where fences come from: the ``geofences`` collection, a GeoJSON file, or both.

Loaders are small picklable specs (Beam ships them to workers); a store's loader is given the
factory ``bootstrap.py`` builds it with, and opens it lazily on the worker, never at
construction. ``fences()`` reads the current definitions; ``fence_feed.py``
calls it periodically and turns changes into the job's fence side input.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meridian.ports import DocumentStore, Query
from pipelines.geofence.fences import (
    COLLECTION,
    Geofence,
    fences_from_documents,
    fences_from_geojson,
)


class FenceLoader(abc.ABC):
    @abc.abstractmethod
    def fences(self) -> list[Geofence]: ...

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class GeoJsonFences(FenceLoader):
    path: str
    default_margin_m: float = 15.0

    def fences(self) -> list[Geofence]:
        fences, _problems = fences_from_geojson(Path(self.path), self.default_margin_m)
        return fences


@dataclass
class StoreFences(FenceLoader):
    """The ``geofences`` collection of the document store ``open_store`` builds (embedded or
    Firestore: ``bootstrap.JobAdapters.fence_store``), opened on first use."""

    open_store: Callable[[], DocumentStore]
    default_margin_m: float = 15.0

    def fences(self) -> list[Geofence]:
        store = getattr(self, "_store", None)
        if store is None:
            store = self._store = self.open_store()
        documents = store.query(Query(COLLECTION))
        fences, _problems = fences_from_documents(
            ((d.id, d.data) for d in documents), self.default_margin_m
        )
        return fences


@dataclass
class StaticFences(FenceLoader):
    """A fixed list of fences (tests, benchmarks)."""

    fixed: Sequence[Geofence] = ()

    def fences(self) -> list[Geofence]:
        return list(self.fixed)

    def __getstate__(self) -> dict[str, Any]:
        return {"fixed": self.fixed}


@dataclass
class CombinedFences(FenceLoader):
    loaders: Sequence[FenceLoader] = field(default_factory=list)

    def fences(self) -> list[Geofence]:
        return [f for loader in self.loaders for f in loader.fences()]

    def __getstate__(self) -> dict[str, Any]:
        return {"loaders": self.loaders}
