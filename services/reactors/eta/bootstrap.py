"""The only place the ETA reactor's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.config import Settings
from meridian.reactor import PushEssentials, push_essentials
from services.reactors.eta.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials]:
    push = push_essentials(settings, "eta")
    deps = Deps(
        store=adapters.document_store(settings),
        publisher=adapters.publisher(settings),
        codec=push.codec,
        travel=adapters.travel_time(settings),
        clock=lambda: datetime.now(UTC),
    )
    return deps, push
