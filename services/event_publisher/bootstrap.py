"""The only place the event publisher's adapters are built."""

from __future__ import annotations

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.edge.push import RememberedTokens
from meridian.embedded.eventarc import eventarc_service_account
from meridian.ports import PushAuthenticator
from services.event_publisher.handlers import Deps


def bootstrap(settings: Settings) -> tuple[Deps, PushAuthenticator, str]:
    deps = Deps(publisher=adapters.publisher(settings), codec=EventCodec(load_catalog()))
    auth = RememberedTokens(
        adapters.push_authenticator(
            settings, frozenset({eventarc_service_account(settings.project)})
        )
    )
    return deps, auth, settings.url_of("event-publisher")
