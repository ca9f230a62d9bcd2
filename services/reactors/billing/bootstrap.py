"""The only place the billing reactor's adapters are built."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from meridian import adapters
from meridian.config import Settings
from meridian.edge.push import PushEssentials
from services.reactors.billing.handlers import Deps

CHARGERS = 40


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials]:
    deps = Deps(
        store=adapters.document_store(settings, service="billing"),
        billing=adapters.billing_api(settings),
        clock=lambda: datetime.now(UTC),
        # As many charges in flight as there were push handler threads before batching.
        chargers=ThreadPoolExecutor(max_workers=CHARGERS, thread_name_prefix="charge"),
    )
    return deps, adapters.push_essentials(settings, "billing")
