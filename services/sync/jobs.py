"""The Cloud Run Jobs of the migration bridge (``schemas/catalog.yaml``, ``jobs:``), by name: each
a function of the encoded argument the sync workflow passes it (``services.sync.envelope``) and
the settings, doing one thing and returning its exit status. ``meridian job run NAME ARGUMENT``
runs one, as its container does on Cloud Run.

- ``sync-pull`` (every minute): the scheduled pull (``services.sync.pull.run_pull``); its
  argument, if any, names one entity.
- ``sync-identities``: applies a request for clients, drivers or vehicles.
- ``sync-shipments``: applies a request for shipments or parcels.
- ``sync-ready``: whether the request's rows are in Meridian yet (``services.sync.ready``; 75
  while not), polled by the workflow.
- ``sync-reconcile``: compares what the request names in the monolith and Meridian and exits 1 on
  any difference beyond the in-flight window (``services.sync.reconcile``).
- ``sync-report``: the workflow's SyncStarted, SyncEnded or SyncError (``services.sync.report``).
- ``sync-backfill`` (by hand, once): the first load of every row (``services.sync.backfill``).

An apply job given a request for another job's entity does nothing (exit 0): the workflow runs
both on every request. It exits 1 when a row was rejected (the rest applied; the rows are in its
log), so the workflow ends in SyncError.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from meridian import adapters, metrics
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.observability import get_logger
from services.sync import legacy
from services.sync.apply import apply_request
from services.sync.backfill import sync_backfill
from services.sync.entities import IDENTITIES_JOB, SHIPMENTS_JOB, entity
from services.sync.envelope import decode_argument
from services.sync.pull import run_pull
from services.sync.ready import sync_ready
from services.sync.reconcile import sync_reconcile
from services.sync.report import sync_report

log = get_logger(__name__)

Job = Callable[[str, Settings], int]


def sync_pull(argument: str, settings: Settings) -> int:
    pages = run_pull(settings, adapters.publisher(settings), argument.strip() or None)
    log.info("pull done", pages=pages)
    return 0


def _apply_job(job: str) -> Job:
    def run(argument: str, settings: Settings) -> int:
        codec = EventCodec(load_catalog())
        request = decode_argument(argument, codec)
        target = entity(request.entity)
        if target.job != job:
            log.info("not this job's entity", job=job, entity=target.name)
            return 0
        store = adapters.document_store(settings, service=job)
        with legacy.connect(settings, autocommit=True) as conn:
            outcome = apply_request(
                store,
                conn,
                target,
                request,
                job,
                settings.legacy.page_size,
                lambda: datetime.now(UTC),
            )
        log.info(
            "request applied",
            job=job,
            request=request.request_id,
            entity=target.name,
            created=outcome.created,
            updated=outcome.updated,
            unchanged=outcome.unchanged,
            conflicts=len(outcome.conflicts),
            written_back=outcome.written_back,
            rejected=outcome.rejected,
        )
        for counted, rows in (
            ("created", outcome.created),
            ("updated", outcome.updated),
            ("unchanged", outcome.unchanged),
            ("rejected", len(outcome.rejected)),
        ):
            metrics.sync_rows(target.name, counted, rows)
        return 1 if outcome.rejected else 0

    run.__name__ = job.replace("-", "_")
    return run


JOBS: dict[str, Job] = {
    "sync-pull": sync_pull,
    IDENTITIES_JOB: _apply_job(IDENTITIES_JOB),
    SHIPMENTS_JOB: _apply_job(SHIPMENTS_JOB),
    "sync-ready": sync_ready,
    "sync-reconcile": sync_reconcile,
    "sync-report": sync_report,
    "sync-backfill": sync_backfill,
}
