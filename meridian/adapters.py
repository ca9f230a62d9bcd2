"""Adapter factories that services' ``bootstrap()`` functions call: ``Settings.backend``
(``MERIDIAN_BACKEND``) picks the embedded or the Google implementation of each port. Nothing here
runs at import time, and Google clients are imported only when the gcp backend is chosen. What
the Google side needs (provider URLs, secret names, the bucket, workflow names) comes from
``Settings.providers``; one that is not set fails the bootstrap with a ConfigError naming its
variable.

It is also the one place that knows how the chosen adapters work, and chooses accordingly:
whether a store's transactions commit in groups and may run on the event loop
(``transactions``), and whether an adapter's calls may (``offload``). Services get these choices
from their bootstrap and never test which adapter they have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from meridian.app.auth import CachingVerifier
from meridian.app.idempotency import EVENT_LEDGER, EXPIRY_FIELD, REQUEST_LEDGER
from meridian.app.tracking import TrackingTokens
from meridian.concurrency.group_commit import TransactionFunction, Transactions, WouldWait
from meridian.concurrency.offload import AtOnce, Inline, InThread, Offload
from meridian.config import Settings
from meridian.ports import (
    BillingApi,
    BlobStore,
    DocumentStore,
    IdentityVerifier,
    Publisher,
    PushAuthenticator,
    RouteOptimizer,
    SmsGateway,
    Subscriber,
    TravelTime,
    Warehouse,
    WebhookSender,
    WorkflowExecutions,
)

if TYPE_CHECKING:
    from meridian.edge.push import PushEssentials

# Collections whose documents expire (Firestore TTL policies; terraform/modules/firestore).
TTL_FIELDS = {REQUEST_LEDGER: EXPIRY_FIELD, EVENT_LEDGER: EXPIRY_FIELD}


def document_store(
    settings: Settings, *, service: str | None = None, rereads: bool = True
) -> DocumentStore:
    """The document store as ``service`` (a catalog service) may use it: it writes only the
    collections of its stores (``schemas/catalog.yaml``, ``stores:``; NotOwned otherwise) and
    reads any. On gcp, the one Firestore database behind ``ownership.GuardedDocumentStore``;
    embedded, one SQLite database per store (``embedded.docstore.stores``), its own read-write
    and the others' read-only. ``service=None`` is an operator's view (the CLI's tools, the
    demo, tests): every collection writable. ``rereads``: whether the service reads documents
    back soon after writing them (a projection updated per event); the embedded store then
    keeps their decoded values."""
    from meridian.catalog import load_catalog
    from meridian.documents.ownership import GuardedDocumentStore, Ownership

    ownership = Ownership.of(load_catalog())
    if settings.backend == "gcp":
        from meridian.gcp.firestore import FirestoreDocumentStore

        firestore = FirestoreDocumentStore(project=settings.project)
        if service is None:
            return firestore
        return GuardedDocumentStore(firestore, ownership, service)
    from meridian.embedded.docstore.stores import ServiceStores

    return ServiceStores(
        settings.data_dir, ownership, service, ttl_fields=TTL_FIELDS, rereads=rereads
    )


def transactions(settings: Settings, store: DocumentStore) -> Transactions:
    """How ``store`` commits transaction functions that become ready together: the embedded
    store, in one SQLite transaction and on the event loop (sub-millisecond local work) when its
    write lock is free at once, else on a thread that waits for it (``WouldWait``); any other
    (Firestore: network round trips), one by one in a worker thread."""
    if settings.backend != "gcp":
        from meridian.embedded.docstore import EmbeddedDocumentStore, db
        from meridian.embedded.docstore.stores import ServiceStores

        # An operator's view of the stores (no home store) commits each function on its own:
        # worker threads, as for Firestore.
        if isinstance(store, EmbeddedDocumentStore) or (
            isinstance(store, ServiceStores) and store.home is not None
        ):
            embedded = store

            def at_once(functions: Sequence[TransactionFunction]) -> list[Any]:
                try:
                    with db.without_waiting():
                        return embedded.run_transactions(functions)
                except db.LockBusy as e:
                    raise WouldWait(str(e)) from e

            return Transactions(
                store,
                inline=True,
                commit_group=store.run_transactions,
                commit_group_at_once=at_once,
            )
    return Transactions(store)


def offload(settings: Settings, executor: Executor | None = None) -> Offload:
    """Where an event loop runs the adapters' blocking calls (``concurrency.offload``). On gcp, in
    a thread of ``executor`` (the loop's default one if None). Embedded (local work shorter than a
    thread hop), on the loop: with an ``executor`` (one thread), only when the SQLite write locks
    the call takes (the broker's, the document store's) are free at once, else in turn on that
    thread, shedding past the bounds (``AtOnce``: the command service's telemetry ingest);
    without one, unconditionally (the live map's writer where it runs alone)."""
    if settings.backend == "gcp":
        return InThread(executor)
    if executor is None:
        return Inline()
    from meridian.embedded.docstore import db

    def try_at_once(function: Callable[..., Any], *args: Any) -> Any:
        try:
            with db.without_waiting():
                return function(*args)
        except db.LockBusy as e:
            raise WouldWait(str(e)) from e

    return AtOnce(try_at_once, executor)


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

        return CachingVerifier(
            IdentityPlatformVerifier(
                settings.project, settings.identity_certs_url, settings.identity_tenants
            )
        )
    from meridian.embedded.identity import LocalIdentityVerifier

    return CachingVerifier(LocalIdentityVerifier.for_data_dir(settings.data_dir))


def push_authenticator(settings: Settings, allowed_emails: frozenset[str]) -> PushAuthenticator:
    """Checks push tokens; only ``allowed_emails`` (identities of ``Settings``) may call. On gcp,
    the claims Cloud Run's IAM verified, or, with ``Settings.push_certs_url``, the signature
    verified here against the keys published there."""
    from meridian.edge.push_auth import CloudRunIamPush, PublishedKeys, VerifiedPush

    if settings.backend == "gcp":
        if settings.push_certs_url:
            return VerifiedPush(PublishedKeys(settings.push_certs_url), allowed_emails)
        return CloudRunIamPush(allowed_emails)
    from meridian.embedded.oidc import PushTokenVerifier, load_jwks

    return VerifiedPush(PushTokenVerifier(load_jwks(settings.data_dir)), allowed_emails)


def push_essentials(settings: Settings, service: str) -> PushEssentials:
    """What a reactor's push endpoint needs: push authentication (only Pub/Sub's push identity,
    ``Settings.push_identity``, may call; accepted tokens remembered), the codec, its URL."""
    from meridian.catalog import load_catalog
    from meridian.codec.events import EventCodec
    from meridian.edge.push import PushEssentials
    from meridian.edge.push_auth import RememberedTokens

    auth = push_authenticator(settings, frozenset({settings.push_identity}))
    return PushEssentials(
        RememberedTokens(auth), EventCodec(load_catalog()), settings.url_of(service)
    )


def tracking_tokens(settings: Settings) -> TrackingTokens:
    if settings.backend == "gcp":
        return TrackingTokens(settings.required("tracking_secret").encode())
    return TrackingTokens.for_data_dir(settings.data_dir)


# External systems (issue #6): embedded stand-ins locally, real providers on GCP -----------------


def _provider_key(settings: Settings, provider: str) -> str:
    """A provider's API key: ``settings.providers.<provider>_api_key`` when set (Cloud Run put
    the secret in the environment), else read from the Secret Manager secret that
    ``<provider>_api_key_secret`` names (ConfigError naming its variable if neither is set)."""
    value = str(getattr(settings.providers, f"{provider}_api_key"))
    if value:
        return value
    from meridian.gcp.external import secret

    return secret(settings.project, settings.required(f"{provider}_api_key_secret"))


def sms_gateway(settings: Settings) -> SmsGateway:
    from meridian.wire.providers import HttpSmsGateway

    if settings.backend == "gcp":
        url = settings.required("sms_url")
        return HttpSmsGateway(url, _provider_key(settings, "sms"))
    return HttpSmsGateway(settings.url_of("sms-gateway"))


def billing_api(settings: Settings) -> BillingApi:
    from meridian.wire.providers import HttpBillingApi

    if settings.backend == "gcp":
        url = settings.required("billing_url")
        return HttpBillingApi(url, _provider_key(settings, "billing"))
    return HttpBillingApi(settings.url_of("billing-api"))


def webhook_sender(settings: Settings) -> WebhookSender:
    from meridian.wire.providers import HttpWebhookSender

    # Production (gcp) client endpoints are https:// only (``meridian.app.webhooks``).
    return HttpWebhookSender(https_only=settings.backend == "gcp")


def travel_time(settings: Settings) -> TravelTime:
    if settings.backend == "gcp":
        from meridian.gcp.external import RoutesApiTravelTime

        return RoutesApiTravelTime(_provider_key(settings, "routes"))
    from meridian.embedded.external.local import GreatCircleTravelTime

    return GreatCircleTravelTime()


def blob_store(settings: Settings) -> BlobStore:
    if settings.backend == "gcp":
        from meridian.gcp.external import GcsBlobStore

        return GcsBlobStore(settings.required("pod_bucket"))
    from meridian.embedded.external.local import LocalBlobStore

    return LocalBlobStore(settings.data_dir / "blobs")


# Dispatch (issue #8) ---------------------------------------------------------------------------


def route_optimizer(settings: Settings) -> RouteOptimizer:
    if settings.backend == "gcp":
        from meridian.gcp.routing import RouteOptimizationApi

        return RouteOptimizationApi(settings.project)
    from meridian.embedded.routing import FaultInjectingOptimizer, OrToolsRouteOptimizer, fault_dir

    return FaultInjectingOptimizer(OrToolsRouteOptimizer(), fault_dir(settings.data_dir))


def workflow_executions(settings: Settings) -> WorkflowExecutions:
    """Executions are started from other processes: embedded, over the platform's executions API
    (the engine runs in the platform process); on GCP, Cloud Workflows."""
    if settings.backend == "gcp":
        from meridian.gcp.workflows import CloudWorkflowsExecutions

        # The workflows Terraform names (MERIDIAN_DISPATCH_WORKFLOW=projects/P/locations/L/
        # workflows/W, ``Settings.providers.workflows``); the start records live in the
        # document store (idempotency): ``workflow_starts``, of the command service, which starts
        # the executions (opening a window)
        starts = document_store(settings, service="command")
        return CloudWorkflowsExecutions(settings.providers.workflows, starts)
    from meridian.embedded.workflows.client import WorkflowsClient

    return WorkflowsClient(settings.url_of("platform"))


def warehouse(settings: Settings) -> Warehouse:
    """The analytics warehouse (the telemetry archive): BigQuery in ``settings.project`` on GCP
    (its tables are Terraform's, day-partitioned), DuckDB over Parquet files in the data
    directory locally."""
    if settings.backend == "gcp":
        from meridian.gcp.bigquery import BigQueryWarehouse

        return BigQueryWarehouse(settings.project)
    from meridian.embedded.warehouse import EmbeddedWarehouse

    return EmbeddedWarehouse(settings.data_dir)
