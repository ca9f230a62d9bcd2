"""The only place the command service's adapters are built, with the choices that depend on how
they work (``meridian.adapters.transactions`` and ``offload``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime

from meridian import adapters
from meridian.app.webhooks import WebhookPolicy
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.concurrency.group_commit import Transactions
from meridian.concurrency.offload import Offload
from meridian.config import Settings
from meridian.domain.telemetry import PingWindow
from meridian.ports import BlobStore, IdentityVerifier, WorkflowExecutions
from services.command.handlers import Deps
from services.command.routes.schedules import SchedulerCalls
from services.command.routes.telemetry import ingest_thread


def bootstrap(
    settings: Settings,
) -> tuple[
    Deps,
    IdentityVerifier,
    WorkflowExecutions | None,
    Callable[[], BlobStore],
    Transactions,
    Offload,
    SchedulerCalls | None,
]:
    """What ``app.create_app`` takes, in its order."""
    deps = Deps(
        # Each parcel moves minutes apart and each request key is read back only on a retry:
        # documents the store kept decoded would only be walked by every full collection
        # (pauses of ~60 ms at 900 moves/s, and ~5% of the process's CPU).
        store=adapters.document_store(settings, service="command", rereads=False),
        publisher=adapters.publisher(settings),
        codec=EventCodec(load_catalog()),
        clock=lambda: datetime.now(UTC),
        webhook_policy=WebhookPolicy.from_settings(settings),
        ping_window=PingWindow.of_seconds(
            settings.telemetry_max_skew_s, settings.telemetry_max_age_s
        ),
    )
    try:
        workflows: WorkflowExecutions | None = adapters.workflow_executions(settings)
    except NotImplementedError:  # no Cloud Workflows adapter yet: dispatch routes answer 503
        workflows = None
    # The POD photo store is built on the first upload (a deployment without a bucket still
    # serves every other route).
    blobs = functools.cache(functools.partial(adapters.blob_store, settings))
    # Parcel moves commit in groups on the event loop on the embedded store, one by one in worker
    # threads on Firestore; telemetry batches are ingested on the loop embedded, else in turn on
    # one thread.
    transactions = adapters.transactions(settings, deps.store)
    ingest = adapters.offload(settings, ingest_thread())
    # Only Cloud Scheduler's identity may fire the dispatch schedules. The service is public (no
    # IAM check in front), so on gcp its token must be verified against the keys at
    # MERIDIAN_PUSH_CERTS_URL: without them, firing answers 503 rather than trust a token unread.
    scheduler = None
    if settings.backend != "gcp" or settings.push_certs_url:
        allowed = frozenset({settings.scheduler_identity})
        scheduler = SchedulerCalls(adapters.push_authenticator(settings, allowed))
    verifier = adapters.identity_verifier(settings)
    return deps, verifier, workflows, blobs, transactions, ingest, scheduler
