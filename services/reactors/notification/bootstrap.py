"""The only place the notification reactor's adapters are built."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from meridian import adapters
from meridian.config import Settings
from meridian.edge.push import PushEssentials
from services.reactors.notification.handlers import Deps

SENDERS = 40


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials]:
    deps = Deps(
        store=adapters.document_store(settings, service="notification"),
        sms=adapters.sms_gateway(settings),
        tracking=adapters.tracking_tokens(settings),
        # The customer-facing tracking page is served by the live map.
        tracking_base_url=settings.tracking_base_url or settings.url_of("live-map"),
        clock=lambda: datetime.now(UTC),
        # As many SMS in flight as there were push handler threads before batching.
        senders=ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="sms"),
    )
    return deps, adapters.push_essentials(settings, "notification")
