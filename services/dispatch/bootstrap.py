"""The only place the dispatch service's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from services.dispatch.handlers import Deps
from services.dispatch.ledger import LedgerWriter


def bootstrap(settings: Settings) -> Deps:
    store = adapters.document_store(settings)
    return Deps(
        store=store,
        publisher=adapters.publisher(settings),
        codec=EventCodec(load_catalog()),
        optimizer=adapters.route_optimizer(settings),
        clock=lambda: datetime.now(UTC),
        ledger=LedgerWriter(store),
    )
