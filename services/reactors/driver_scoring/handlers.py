"""Driver scores: on-time delivery rate, deliveries per hour, failed-delivery rate, declined offers
and idle time, projected to ``driver_scores/{driver}``.

Counters and the processed-event record commit in one transaction, so a redelivered event is
never counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meridian.app.idempotency import already_processed, mark_processed
from meridian.domain.events import (
    DeliveryFailed,
    DomainEvent,
    DriverAssignmentDeclined,
    ParcelDelivered,
    VehicleIdle,
)
from meridian.ports import DocumentStore, Transaction

CONSUMER = "driver-scoring"
SCORES = "driver_scores"
VEHICLE_DRIVERS = "vehicle_drivers"  # who last drove each vehicle, to charge idle time to them


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    clock: Callable[[], datetime]


def rates(score: Mapping[str, Any]) -> dict[str, Any]:
    """The derived figures of a driver's counters."""
    delivered, failed = score.get("delivered", 0), score.get("failed", 0)
    first, last = score.get("first_delivery_at"), score.get("last_delivery_at")
    hours = max(1.0, (last - first).total_seconds() / 3600) if first and last else 1.0
    attempts = delivered + failed
    return {
        "on_time_rate": round(score.get("on_time", 0) / delivered, 4) if delivered else None,
        "failed_rate": round(failed / attempts, 4) if attempts else None,
        "deliveries_per_hour": round(delivered / hours, 2) if delivered else 0.0,
    }


def _apply(tx: Transaction, event: DomainEvent, score: dict[str, Any]) -> str | None:
    """Fold ``event`` into ``score``; returns the driver id (None: no driver to score)."""
    if isinstance(event, ParcelDelivered):
        score["delivered"] = score.get("delivered", 0) + 1
        score["on_time"] = score.get("on_time", 0) + (event.delivered_at <= event.window_end)
        first = score.get("first_delivery_at")
        score["first_delivery_at"] = min(first, event.delivered_at) if first else event.delivered_at
        last = score.get("last_delivery_at")
        score["last_delivery_at"] = max(last, event.delivered_at) if last else event.delivered_at
        tx.set(f"{VEHICLE_DRIVERS}/{event.vehicle_id}", {"driver_id": event.driver_id})
        return event.driver_id
    if isinstance(event, DeliveryFailed):
        score["failed"] = score.get("failed", 0) + 1
        tx.set(f"{VEHICLE_DRIVERS}/{event.vehicle_id}", {"driver_id": event.driver_id})
        return event.driver_id
    if isinstance(event, DriverAssignmentDeclined):
        score["declined_offers"] = score.get("declined_offers", 0) + 1
        return event.driver_id
    if isinstance(event, VehicleIdle):
        score["idle_seconds"] = score.get("idle_seconds", 0.0) + event.idle_seconds
        return None
    return None


def _driver_of(tx: Transaction, event: DomainEvent) -> str | None:
    if isinstance(event, VehicleIdle):
        known = tx.get(f"{VEHICLE_DRIVERS}/{event.vehicle_id}")
        return str(known.data["driver_id"]) if known else None
    driver = getattr(event, "driver_id", None)
    return str(driver) if driver else None


def score_driver(event: DomainEvent, deps: Deps) -> str:
    return deps.store.run_transaction(score_transaction(event, deps))


def score_transaction(event: DomainEvent, deps: Deps) -> Callable[[Transaction], str]:
    """The transaction that scores ``event`` (what a batch commits with the others)."""
    now = deps.clock()

    def record(tx: Transaction) -> str:
        if already_processed(tx, CONSUMER, event.event_id):
            return "duplicate"
        driver = _driver_of(tx, event)
        outcome = "no driver to score"
        if driver is not None:
            current = tx.get(f"{SCORES}/{driver}")
            score = dict(current.data) if current else {"driver_id": driver}
            _apply(tx, event, score)
            tx.set(f"{SCORES}/{driver}", {**score, **rates(score), "updated_at": now})
            outcome = f"scored {driver}"
        mark_processed(tx, CONSUMER, event.event_id, now)
        return outcome

    return record
