"""The ``sync-report`` job: the sync workflow's status of one run onto ``logistics.events``.

The workflow runs it first (``SyncStarted``), then last (``SyncEnded``, with the steps it ran),
or when a step fails (``SyncError``, naming the step and why). Each event's id derives from the
request, the workflow execution and the outcome, so a report the workflow retries (or a resumed
execution repeats) publishes the same id and consumers deduplicate it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.events import DomainEvent, SyncEnded, SyncError, SyncStarted, derive_event_id
from meridian.observability import get_logger
from meridian.ports import Publisher
from services.sync.envelope import Report, decode_report

log = get_logger(__name__)
REASON_LIMIT = 2000


def status_event(report: Report, now: datetime) -> DomainEvent:
    """The event announcing ``report``."""
    request = report.request
    event_id = derive_event_id("sync", report.outcome, request.request_id, report.execution_id)
    request_id, entity, execution_id = request.request_id, request.entity, report.execution_id
    if report.outcome == "started":
        return SyncStarted(
            event_id=event_id,
            occurred_at=now,
            request_id=request_id,
            entity=entity,
            execution_id=execution_id,
            origin=str(request.origin),
        )
    if report.outcome == "ended":
        return SyncEnded(
            event_id=event_id,
            occurred_at=now,
            request_id=request_id,
            entity=entity,
            execution_id=execution_id,
            steps=report.steps,
        )
    return SyncError(
        event_id=event_id,
        occurred_at=now,
        request_id=request_id,
        entity=entity,
        execution_id=execution_id,
        step=report.step,
        reason=report.reason[:REASON_LIMIT],
    )


def publish_report(
    argument: str,
    codec: EventCodec,
    publisher: Publisher,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DomainEvent:
    event = status_event(decode_report(argument, codec), clock())
    publisher.publish(codec.topic_of(event.event_type), [codec.to_message(event)])
    log.info(
        "sync run reported",
        event_type=event.event_type,
        request_id=getattr(event, "request_id", ""),
    )
    return event


def sync_report(argument: str, settings: Settings) -> int:
    """Job entry point (``meridian job run sync-report ARGUMENT``)."""
    publish_report(argument, EventCodec(load_catalog()), adapters.publisher(settings))
    return 0
