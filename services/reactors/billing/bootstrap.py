"""The only place the billing reactor's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.config import Settings
from meridian.reactor import PushEssentials, push_essentials
from services.reactors.billing.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials]:
    deps = Deps(
        store=adapters.document_store(settings),
        billing=adapters.billing_api(settings),
        clock=lambda: datetime.now(UTC),
    )
    return deps, push_essentials(settings, "billing")
