"""The only place the client-webhook reactor's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.app.webhooks import WebhookPolicy
from meridian.config import Settings
from meridian.edge.push import PushEssentials
from services.reactors.webhook.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials]:
    deps = Deps(
        store=adapters.document_store(settings, service="client-webhook"),
        sender=adapters.webhook_sender(settings),
        policy=WebhookPolicy.from_settings(settings),
        clock=lambda: datetime.now(UTC),
    )
    return deps, adapters.push_essentials(settings, "client-webhook")
