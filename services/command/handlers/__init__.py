"""The command service's use cases, one module per feature (``parcels``, ``telemetry``,
``dispatch``, ``schedules``, ``pod``, ``webhooks``): one function each, taking the command and
the ports it needs. Here, what they all share: ``Deps`` and who a client system's API key names.

Handlers never see HTTP: the routes (``services/command/routes/``) parse, call them and map
domain errors to problem answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from meridian.app.auth import api_key_digest
from meridian.app.webhooks import WebhookPolicy
from meridian.codec.events import EventCodec
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.domain.telemetry import PingWindow
from meridian.ports import DocumentStore, Publisher


@dataclass(frozen=True)
class Deps:
    """What the handlers need: built once by bootstrap, fakes in unit tests."""

    store: DocumentStore
    publisher: Publisher
    codec: EventCodec
    clock: Callable[[], datetime]
    # Where client webhook endpoints may point (bootstrap: https:// only on the gcp backend).
    webhook_policy: WebhookPolicy = field(default_factory=WebhookPolicy)
    # How far from ``clock`` a ping's recorded_at may be (bootstrap: from Settings).
    ping_window: PingWindow = field(default_factory=PingWindow)


def client_for_api_key(api_key: str, store: DocumentStore) -> Actor:
    """The client system an API key belongs to; Unauthenticated if unknown or revoked."""
    entry = store.get(f"api_keys/{api_key_digest(api_key)}")
    if entry is None or not entry.data.get("active", True):
        raise Unauthenticated("unknown or revoked API key")
    return Actor(subject=entry.data["client_id"], role="client")
