"""Adapter factories that services' ``bootstrap()`` functions call: ``MERIDIAN_BACKEND`` picks
the embedded or the Google implementation of each port. Nothing here runs at import time, and
Google clients are imported only when the gcp backend is chosen.
"""

from __future__ import annotations

from meridian.auth import IdentityVerifier, PushAuthenticator
from meridian.config import Settings
from meridian.idempotency import EVENT_LEDGER, EXPIRY_FIELD, REQUEST_LEDGER
from meridian.ports import DocumentStore, Publisher, Subscriber
from meridian.tracking import TrackingTokens

# Collections whose documents expire (Firestore TTL policies; terraform/modules/firestore).
TTL_FIELDS = {REQUEST_LEDGER: EXPIRY_FIELD, EVENT_LEDGER: EXPIRY_FIELD}


def document_store(settings: Settings) -> DocumentStore:
    if settings.backend == "gcp":
        from meridian.gcp.firestore import FirestoreDocumentStore

        return FirestoreDocumentStore(project=settings.project)
    from meridian.embedded.docstore import EmbeddedDocumentStore

    return EmbeddedDocumentStore(settings.data_dir, ttl_fields=TTL_FIELDS)


def _pubsub(settings: Settings) -> Publisher | Subscriber:
    if settings.backend == "gcp":
        from meridian.gcp.pubsub import GcpPubSub

        return GcpPubSub(settings.project)
    from meridian.embedded.pubsub.adapter import EmbeddedPubSub
    from meridian.embedded.pubsub.broker import Broker

    return EmbeddedPubSub(Broker(settings.data_dir, project=settings.project))


def publisher(settings: Settings) -> Publisher:
    adapter = _pubsub(settings)
    assert isinstance(adapter, Publisher)
    return adapter


def subscriber(settings: Settings) -> Subscriber:
    adapter = _pubsub(settings)
    assert isinstance(adapter, Subscriber)
    return adapter


def identity_verifier(settings: Settings) -> IdentityVerifier:
    if settings.backend == "gcp":
        from meridian.gcp.identity import IdentityPlatformVerifier

        return IdentityPlatformVerifier(settings.project)
    from meridian.embedded.identity import LocalIdentityVerifier

    return LocalIdentityVerifier.for_data_dir(settings.data_dir)


def push_authenticator(settings: Settings, allowed_emails: frozenset[str]) -> PushAuthenticator:
    from meridian.push_auth import CloudRunIamPush, VerifiedPush

    if settings.backend == "gcp":
        return CloudRunIamPush(allowed_emails)
    from meridian.embedded.oidc import PushTokenVerifier, load_jwks

    return VerifiedPush(PushTokenVerifier(load_jwks(settings.data_dir)), allowed_emails)


def tracking_tokens(settings: Settings) -> TrackingTokens:
    if settings.backend == "gcp":
        import os

        return TrackingTokens(os.environ["MERIDIAN_TRACKING_SECRET"].encode())
    return TrackingTokens.for_data_dir(settings.data_dir)
