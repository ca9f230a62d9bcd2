"""The only place the ETA reactor's adapters are built."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian import adapters
from meridian.config import Settings
from meridian.edge.push import PushEssentials
from meridian.ports import PushAuthenticator
from services.reactors.eta.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushEssentials, PushAuthenticator]:
    """The handler's ports, the push endpoint's essentials, and the check of the scheduler's
    OIDC token on ``/tick`` (only the scheduler's identity may call it)."""
    push = adapters.push_essentials(settings, "eta")
    deps = Deps(
        store=adapters.document_store(settings, service="eta"),
        publisher=adapters.publisher(settings),
        codec=push.codec,
        travel=adapters.travel_time(settings),
        clock=lambda: datetime.now(UTC),
    )
    scheduler = adapters.push_authenticator(settings, frozenset({settings.scheduler_identity}))
    return deps, push, scheduler
