"""The only place the dispatch service's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.edge.push_auth import RememberedTokens
from meridian.ports import PushAuthenticator
from services.dispatch.handlers import Deps
from services.dispatch.ledger import LedgerWriter


def bootstrap(settings: Settings) -> tuple[Deps, PushAuthenticator, str]:
    """What ``app.create_app`` takes: the steps' adapters, the check that the caller is the
    dispatch workflow (``Settings.workflow_identity``; accepted tokens remembered), the URL."""
    store = adapters.document_store(settings, service="dispatch")
    deps = Deps(
        store=store,
        publisher=adapters.publisher(settings),
        codec=EventCodec(load_catalog()),
        optimizer=adapters.route_optimizer(settings),
        clock=lambda: datetime.now(UTC),
        ledger=LedgerWriter(store),
    )
    auth = adapters.push_authenticator(settings, frozenset({settings.workflow_identity}))
    return deps, RememberedTokens(auth), settings.url_of("dispatch")
