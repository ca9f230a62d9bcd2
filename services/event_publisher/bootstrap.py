"""The only place the event publisher's adapters are built."""

from __future__ import annotations

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.edge.push_auth import RememberedTokens
from meridian.ports import PushAuthenticator
from services.event_publisher.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushAuthenticator, str]:
    deps = Deps(publisher=adapters.publisher(settings), codec=EventCodec(load_catalog()))
    # Only Eventarc's trigger identity may call (Settings.eventarc_identity).
    auth = RememberedTokens(
        adapters.push_authenticator(settings, frozenset({settings.eventarc_identity}))
    )
    return deps, auth, settings.url_of("event-publisher")
