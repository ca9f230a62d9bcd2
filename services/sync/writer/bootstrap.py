"""The only place the legacy writer's adapters are built: the monolith's PostgreSQL, Meridian's
document store (read only: the documents of a shipment created in Meridian, to insert its rows)
and the push endpoint's essentials. It keeps its ledger in PostgreSQL, with its effect, so it
writes no document."""

from __future__ import annotations

from meridian import adapters
from meridian.config import Settings
from meridian.edge.push import PushEssentials
from services.sync.writer.handlers import Deps
from services.sync.writer.postgres import PostgresTables

SERVICE = "legacy-writer"
# Batches in flight at once, each on its own connection: the rest of a batch's time is
# PostgreSQL's commit, which other batches can overlap.
CONCURRENCY = 4


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials]:
    deps = Deps(
        tables=PostgresTables(settings, size=CONCURRENCY),
        store=adapters.document_store(settings, service="legacy-writer"),
    )
    return deps, adapters.push_essentials(settings, SERVICE)
