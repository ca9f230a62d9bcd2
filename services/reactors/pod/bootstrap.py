"""The only place the pod reactor's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.config import Settings
from meridian.edge.push import PushEssentials, push_essentials
from services.reactors.pod.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials]:
    deps = Deps(
        store=adapters.document_store(settings),
        blobs=adapters.blob_store(settings),
        clock=lambda: datetime.now(UTC),
    )
    return deps, push_essentials(settings, "pod")
