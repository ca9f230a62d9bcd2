"""Prometheus metrics, the same in every service: requests per route, pushes per subscription, and
the business counters (#22 item 4), exposed at ``GET /metrics`` by every service's app.

Every service's app is a ``meridian.edge.fast_routes.PlainRoutes``, which times each request and
counts it here once, whichever way it was served (a plain route, a direct route, FastAPI's
routing), labelled by its route's template, never its raw path (``unmatched`` for a path no route
matches, so a scanner cannot grow the series without bound). The push endpoint
(``meridian.edge.push``) counts each push by subscription and outcome and observes each event's
lag from its commit. The business counters are counted through the functions at the bottom, by a
handler after its effect has committed (never inside a transaction function, which may run again),
so handlers never import ``prometheus_client``: deliveries and failures by the event publisher once
their events are published, SLA breaches by the ETA reactor once its outbox is published, SMS by
the notification reactor once its sends are recorded, webhook attempts by the webhook reactor's
sender once each outcome is recorded (docs/operations.md, 'Metrics'). The migration bridge's
(rows applied, lag, conflicts, reconciliation differences) by its jobs, which also log each figure:
a Cloud Run Job is not scraped, so on Google Cloud its logs carry them (docs/migration.md). The
command service's group commit (``meridian.concurrency.group_commit.Committer``) counts where each
group committed, how long its oldest move waited, the moves it shed, and (read at each scrape) how many wait now.
Its telemetry ingest (``meridian.concurrency.offload.AtOnce``) counts the same of its publishes.

Cost, measured in-process (``time.process_time``, 200,000 requests' worth of the instrument's
work, interleaved with the same loop without it, three rounds): about 1.5 µs a request, 0.2% of a
``:deliver``'s ~0.8 CPU-ms. The labelled children are cached per route (``RouteMetrics``), so a
request pays two clock reads, one histogram observation and one counter increment, and no label
lookup.

The metrics live in ``prometheus_client``'s process-wide registry: one service per process in
production and in ``meridian up``. In GCP, Google Cloud Managed Service for Prometheus scrapes the
same ``/metrics`` (docs/operations.md, 'Metrics in Cloud Monitoring').
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

# No ``*_created`` series beside each counter: a scrape reads rates, not creation times.
disable_created_metrics()

# Latency buckets for a service whose fast answers take a millisecond and whose slow ones (a
# dispatch step, a webhook send) take seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "meridian_http_requests",
    "HTTP requests answered, by route template and status class.",
    ("method", "route", "status"),
)
REQUEST_ERRORS = Counter(
    "meridian_http_request_errors",
    "HTTP requests answered 5xx, by route template.",
    ("method", "route"),
)
REQUEST_SECONDS = Histogram(
    "meridian_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ("method", "route"),
    buckets=_BUCKETS,
)
PUSHES = Counter(
    "meridian_push_messages",
    "Pub/Sub pushes handled, by the service's subscription and outcome (acked or nacked).",
    ("subscription", "outcome"),
)
PUSH_SECONDS = Histogram(
    "meridian_push_duration_seconds",
    "Time to handle one pushed event, by subscription.",
    ("subscription",),
    buckets=_BUCKETS,
)
EVENT_LAG = Histogram(
    "meridian_event_lag_seconds",
    "From an event's commit (its occurred_at) to its handling by the consumer, by subscription.",
    ("subscription",),
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
DELIVERIES = Counter(
    "meridian_deliveries",
    "Parcels marked delivered, counted as the event publisher publishes ParcelDelivered "
    "(at least once: a change Eventarc redelivers is counted again).",
)
DELIVERY_FAILURES = Counter(
    "meridian_delivery_failures",
    "Delivery attempts that failed, counted as the event publisher publishes DeliveryFailed "
    "(at least once: a change Eventarc redelivers is counted again).",
)
SLA_BREACHES = Counter(
    "meridian_sla_breaches",
    "Parcels announced past their promised window (SlaBreached published by the ETA reactor).",
)
WEBHOOKS = Counter(
    "meridian_webhooks",
    "Client webhook attempts, by outcome (sent: answered 2xx; failed: any other answer or none).",
    ("outcome",),
)
SMS_SENT = Counter("meridian_sms_sent", "Text messages the gateway accepted (recorded).")
SYNC_CONFLICTS = Counter(
    "meridian_sync_conflicts",
    "Records the migration bridge found changed on both sides (the monolith and Meridian) since "
    "the last sync, by entity; each is recorded in sync_conflicts (services/sync/conflicts.py).",
    ("entity",),
)
SYNC_ROWS = Counter(
    "meridian_sync_rows",
    "Monolith rows the migration bridge applied into Meridian, by entity and outcome (created, "
    "updated, unchanged: already applied, rejected: not a valid Meridian record).",
    ("entity", "outcome"),
)
SYNC_LAG = Histogram(
    "meridian_sync_lag_seconds",
    "The migration bridge's lag, by direction: to_meridian, from a row's commit in the monolith "
    "(its updated_at) to its document's write in Meridian; to_monolith, from a Meridian event's "
    "occurred_at to its commit in the monolith's tables.",
    ("direction",),
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0),
)
SYNC_DIFFERENCES = Gauge(
    "meridian_sync_reconcile_differences",
    "Records the migration bridge's last reconciliation found different between the monolith "
    "and Meridian beyond the in-flight window, by entity (services/sync/reconcile.py).",
    ("entity",),
)
COMMIT_GROUPS = Counter(
    "meridian_commit_groups",
    "Group commits of requests' transactions, by where they ran: event_loop (the store's write "
    "lock was free at once) or writer_thread (it was held elsewhere, or groups before were still "
    "waiting there).",
    ("where",),
)
COMMIT_WAIT_SECONDS = Histogram(
    "meridian_commit_wait_seconds",
    "From a request's arrival at the group commit to its group's commit, for the longest-waiting "
    "request of each group.",
    buckets=_BUCKETS,
)
COMMIT_SHED = Counter(
    "meridian_commit_shed",
    "Requests answered 503 (overloaded) without being run because the commit queue was past its "
    "bound (its oldest request waiting too long, or too many waiting).",
)
COMMIT_QUEUE_DEPTH = Gauge(
    "meridian_commit_queue_depth",
    "Requests waiting for their group commit now (queued on the event loop or the writer thread).",
)
PUBLISH_BATCHES = Counter(
    "meridian_publish_batches",
    "The command service's telemetry batches recorded and published, by where they ran: "
    "event_loop (the Pub/Sub broker's write lock was free at once) or publisher_thread (it was "
    "held elsewhere, or batches before were still waiting there).",
    ("where",),
)
PUBLISH_WAIT_SECONDS = Histogram(
    "meridian_publish_wait_seconds",
    "From a telemetry batch's arrival to its publish, for batches published on the publisher "
    "thread.",
    buckets=_BUCKETS,
)
PUBLISH_SHED = Counter(
    "meridian_publish_shed",
    "Telemetry batches answered 503 (overloaded) without being recorded because the publisher "
    "thread's queue was past its bound (its oldest batch waiting too long, or too many waiting).",
)
PUBLISH_QUEUE_DEPTH = Gauge(
    "meridian_publish_queue_depth",
    "Telemetry batches waiting on the publisher thread now.",
)

_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True)
class RouteMetrics:
    """One route's labelled children, made once: a request then pays no label lookup."""

    seconds: Histogram
    by_class: tuple[Counter, ...]  # indexed by status // 100 - 1
    errors: Counter

    def observe(self, status: int, seconds: float) -> None:
        self.seconds.observe(seconds)
        self.by_class[min(max(status // 100, 1), 5) - 1].inc()
        if status >= 500:
            self.errors.inc()


_routes: dict[tuple[str, str], RouteMetrics] = {}
_routes_lock = threading.Lock()


def route_metrics(method: str, route: str) -> RouteMetrics:
    """The children of ``method route`` (a template such as ``/v1/parcels/{parcel_id}``)."""
    key = (method, route)
    found = _routes.get(key)
    if found is None:
        with _routes_lock:
            found = _routes.get(key)
            if found is None:
                found = RouteMetrics(
                    REQUEST_SECONDS.labels(method, route),
                    tuple(REQUESTS.labels(method, route, c) for c in _STATUS_CLASSES),
                    REQUEST_ERRORS.labels(method, route),
                )
                _routes[key] = found
    return found


@dataclass(frozen=True)
class PushMetrics:
    """One subscription's push children, made when its endpoint is built."""

    acked: Counter
    nacked: Counter
    seconds: Histogram
    lag: Histogram


def push_metrics(subscription: str) -> PushMetrics:
    return PushMetrics(
        PUSHES.labels(subscription, "acked"),
        PUSHES.labels(subscription, "nacked"),
        PUSH_SECONDS.labels(subscription),
        EVENT_LAG.labels(subscription),
    )


def exposition() -> bytes:
    """Every metric of this process in Prometheus' text format (``CONTENT_TYPE_LATEST``)."""
    return generate_latest()


# The business counters: called by handlers once their effect has committed.


def parcel_delivered() -> None:
    DELIVERIES.inc()


def delivery_failed() -> None:
    DELIVERY_FAILURES.inc()


def sla_breached(count: int = 1) -> None:
    SLA_BREACHES.inc(count)


def webhook_sent() -> None:
    WEBHOOKS.labels("sent").inc()


def webhook_failed() -> None:
    WEBHOOKS.labels("failed").inc()


def sms_sent(count: int = 1) -> None:
    SMS_SENT.inc(count)


def sync_conflict(entity: str) -> None:
    """A conflict the bridge resolved and recorded (counted once its transaction committed)."""
    SYNC_CONFLICTS.labels(entity).inc()


def sync_rows(entity: str, outcome: str, count: int) -> None:
    """``count`` rows of ``entity`` applied with ``outcome`` (counted once committed)."""
    if count:
        SYNC_ROWS.labels(entity, outcome).inc(count)


def sync_lag(direction: str, seconds: float) -> None:
    """One record's lag across the bridge: ``to_meridian`` or ``to_monolith``."""
    SYNC_LAG.labels(direction).observe(max(seconds, 0.0))


def sync_differences(entity: str, count: int) -> None:
    """What the last reconciliation of ``entity`` found."""
    SYNC_DIFFERENCES.labels(entity).set(count)


# The group commit's: called by ``meridian.concurrency.group_commit.Committer``.

_groups_on_loop = COMMIT_GROUPS.labels("event_loop")
_groups_on_writer = COMMIT_GROUPS.labels("writer_thread")


def group_committed(on_loop: bool, waited_s: float) -> None:
    """A group committed (or failed as a whole), its oldest request having waited ``waited_s``."""
    (_groups_on_loop if on_loop else _groups_on_writer).inc()
    COMMIT_WAIT_SECONDS.observe(waited_s)


def commit_shed() -> None:
    COMMIT_SHED.inc()


class CommitQueue(Protocol):
    @property
    def waiting(self) -> int: ...


_commit_queues: weakref.WeakSet[CommitQueue] = weakref.WeakSet()


def watch_commit_queue(queue: CommitQueue) -> None:
    """Count ``queue.waiting`` in ``meridian_commit_queue_depth`` while ``queue`` lives: read at
    each scrape, so a request pays nothing for it."""
    _commit_queues.add(queue)


COMMIT_QUEUE_DEPTH.set_function(lambda: float(sum(q.waiting for q in list(_commit_queues))))


# The telemetry ingest's: called by ``meridian.concurrency.offload.AtOnce``.

_published_on_loop = PUBLISH_BATCHES.labels("event_loop")
_published_on_thread = PUBLISH_BATCHES.labels("publisher_thread")


def published_on_loop() -> None:
    _published_on_loop.inc()


def published_in_turn(waited_s: float) -> None:
    """A batch done on the publisher thread (or failed there), having waited ``waited_s``."""
    _published_on_thread.inc()
    PUBLISH_WAIT_SECONDS.observe(waited_s)


def publish_shed() -> None:
    PUBLISH_SHED.inc()


_publish_queues: weakref.WeakSet[CommitQueue] = weakref.WeakSet()


def watch_publish_queue(queue: CommitQueue) -> None:
    """Count ``queue.waiting`` in ``meridian_publish_queue_depth`` while ``queue`` lives."""
    _publish_queues.add(queue)


PUBLISH_QUEUE_DEPTH.set_function(lambda: float(sum(q.waiting for q in list(_publish_queues))))
