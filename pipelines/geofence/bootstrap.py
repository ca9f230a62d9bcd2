"""The only place the geofence job builds adapters.

Beam pickles the job's transforms and DoFns and ships them to its workers, so the job does not
hold adapters but a ``JobAdapters``: the job's ``Settings`` (backend, data directory, project),
picklable, whose methods build each adapter where it is used (a DoFn's ``setup``, a local root's
first evaluation, a fence refresh), never at construction or import. The other modules take
these methods as factories (``Callable[[], Publisher]`` and so on) and never import an adapter.

- sink: the events and dead letters go to Pub/Sub or the embedded broker (``adapters.publisher``);
- fence feed: the ``geofences`` collection of the document store (``adapters.document_store``);
- local source: the embedded broker's ``geofence`` subscription, pulled directly (the source
  waits on the broker for new messages, which no port offers);
- archive replay: the telemetry archive in the warehouse (``adapters.warehouse``: BigQuery on
  GCP, DuckDB over the Parquet files of ``--data_dir`` locally).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meridian import adapters
from meridian.config import Backend, Settings
from meridian.ports import DocumentStore, Publisher, Warehouse

if TYPE_CHECKING:
    from meridian.embedded.pubsub.broker import Broker


@dataclass(frozen=True)
class JobAdapters:
    """Builds the job's adapters from its settings; picklable, so Beam can ship it."""

    settings: Settings

    def publisher(self) -> Publisher:
        return adapters.publisher(self.settings)

    def fence_store(self) -> DocumentStore:
        return adapters.document_store(self.settings, service="geofence-pipeline")

    def telemetry_broker(self) -> Broker:
        from meridian.embedded.pubsub.broker import Broker

        return Broker(self.settings.data_dir, project=self.settings.project)

    def archive(self) -> Warehouse:
        return adapters.warehouse(self.settings)


def bootstrap(backend: Backend, data_dir: str, project: str) -> JobAdapters:
    """The job's adapters for its ``--backend``, ``--data_dir`` and project options."""
    return JobAdapters(Settings(backend=backend, data_dir=Path(data_dir), project=project))
