"""The only place the pod reactor's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.concurrency.group_commit import Transactions
from meridian.config import Settings
from meridian.edge.push import PushEssentials
from services.reactors.pod.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials, Transactions]:
    """The handlers' ports, the push endpoint's essentials, and how a batch's transactions
    commit (together, on the embedded store)."""
    deps = Deps(
        store=adapters.document_store(settings, service="pod"),
        blobs=adapters.blob_store(settings),
        clock=lambda: datetime.now(UTC),
    )
    return (
        deps,
        adapters.push_essentials(settings, "pod"),
        adapters.transactions(settings, deps.store),
    )
