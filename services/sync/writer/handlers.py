"""Meridian's parcel facts, written back into the monolith's ``parcels`` table.

Every move of a parcel in Meridian (planned, assigned, out for delivery, delivered, failed,
re-queued, returned) is pushed, not only the deliveries, failures, returns and assignments the
monolith's reports read: reconciliation compares the whole status, so the monolith must follow
each move. Each event is applied in one transaction with its id in ``bridge_processed_events``
(``LegacyTransaction.claim``), so a redelivery changes nothing. Per event, in this order:

1. **Already processed**: nothing (``duplicate``).
2. **Unknown parcel** (a parcel the monolith never had): ``NotFound``, answered 404, so Pub/Sub
   retries it and then dead-letters it like every reactor's poison event; nothing is recorded.
3. **Stale**: an event older than a fact already applied to the same parcel changes nothing
   (``stale``): redeliveries and dead-letter replays arrive out of order.
4. **Never back from a final state**: a parcel the monolith holds DELIVERED or RETURNED keeps it
   (``final``), as Meridian's own state machine never leaves one either.
5. **Changed on both sides**: when the monolith's own latest change (``written_by =
   'monolith'``) came after the event and the parcel's status differs,
   ``services.sync.conflicts.decide_status`` decides, the rule the pull applies on Meridian's
   side, so both sides pick the same winner; the monolith's status standing means nothing is
   written here (``monolith wins``) and the pull brings it into Meridian. A monolith change older
   than the event is superseded by it.
6. **Equal values**: nothing is written (``unchanged``). This is how an event the bridge itself
   caused ends when it slips past the subscription's filter: the row already says it.
7. Otherwise the row is updated as the bridge's (``written_by = 'meridian'``), so the pull never
   brings the write back; except over a monolith change the pull has not read yet (the row is
   past its cursor), which keeps ``written_by = 'monolith'`` so that change is not lost: the pull
   then brings the row, whose pushed columns Meridian already holds.

Events the bridge caused (a parcel applied from the monolith by the sync jobs) carry the message
attribute ``origin = monolith`` (set by the event publisher); the writer's subscription filters
them out (``schemas/catalog.yaml``), so they never reach here. The outcome of each step is
recorded as processed all the same: the event is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, assert_never

from meridian.domain import events as ev
from meridian.domain.errors import NotFound
from meridian.domain.events import DomainEvent
from meridian.domain.states import TERMINAL_STATES, ParcelStatus
from meridian.observability import get_logger
from services.sync.conflicts import Source, decide_status
from services.sync.entities import MONOLITH
from services.sync.writer.tables import Fact, LegacyParcel, LegacyTables, LegacyTransaction

log = get_logger(__name__)

CONSUMER = "legacy-writer"

ParcelFact = (
    ev.ParcelPlanned
    | ev.ParcelAssigned
    | ev.ParcelOutForDelivery
    | ev.ParcelDelivered
    | ev.DeliveryFailed
    | ev.ParcelRequeued
    | ev.ParcelReturned
)
_PARCEL_FACTS = (
    ev.ParcelPlanned,
    ev.ParcelAssigned,
    ev.ParcelOutForDelivery,
    ev.ParcelDelivered,
    ev.DeliveryFailed,
    ev.ParcelRequeued,
    ev.ParcelReturned,
)
# The event types the writer applies: its subscription's filter names exactly these.
PUSHED_EVENT_TYPES = tuple(t.event_type for t in _PARCEL_FACTS)


@dataclass(frozen=True)
class Deps:
    tables: LegacyTables


def changes_for(event: ParcelFact) -> dict[str, Any]:
    """The parcel columns ``event`` sets, as Meridian's model moves them
    (``meridian.domain.model.Parcel``)."""
    match event:
        case ev.ParcelPlanned():
            return {"status": ParcelStatus.PLANNED.value}
        case ev.ParcelAssigned():
            return {
                "status": ParcelStatus.ASSIGNED.value,
                "driver_id": event.driver_id,
                "vehicle_id": event.vehicle_id,
            }
        case ev.ParcelOutForDelivery():
            return {
                "status": ParcelStatus.OUT_FOR_DELIVERY.value,
                "driver_id": event.driver_id,
                "vehicle_id": event.vehicle_id,
                "attempts": event.attempt,
            }
        case ev.ParcelDelivered():
            return {
                "status": ParcelStatus.DELIVERED.value,
                "driver_id": event.driver_id,
                "vehicle_id": event.vehicle_id,
                "delivered_at": event.delivered_at,
                "delivered_lat": event.lat,
                "delivered_lng": event.lng,
            }
        case ev.DeliveryFailed():
            return {
                "status": ParcelStatus.DELIVERY_FAILED.value,
                "driver_id": event.driver_id,
                "vehicle_id": event.vehicle_id,
                "attempts": event.attempt,
                "failure_reason": event.reason,
            }
        case ev.ParcelRequeued():
            return {"status": ParcelStatus.CREATED.value, "driver_id": None, "vehicle_id": None}
        case ev.ParcelReturned():
            returned: dict[str, Any] = {"status": ParcelStatus.RETURNED.value}
            if event.reason is not None:
                returned["failure_reason"] = event.reason
            return returned
        case _:
            assert_never(event)


def write_back(event: DomainEvent, deps: Deps) -> str:
    """Apply one event; its outcome (``updated``, ``duplicate``, ``stale``, ...)."""
    outcome = write_back_batch([event], deps)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def write_back_batch(events: Sequence[DomainEvent], deps: Deps) -> list[str | BaseException]:
    """Apply the events of a batch in one transaction (one commit for all), each in its own
    savepoint: an event whose parcel the monolith lacks gets its ``NotFound`` (retried, then
    dead-lettered) and the others commit. Parcels are locked in id order, so two batches never
    wait on each other in a cycle; a parcel's events keep their order. A failed transaction
    raises, for every event of the batch."""
    outcomes: list[str | BaseException] = ["" for _ in events]
    order = sorted(range(len(events)), key=lambda i: _parcel_of(events[i]))
    with deps.tables.transaction() as tx:
        for i in order:
            try:
                with tx.savepoint():
                    outcomes[i] = _apply(tx, events[i])
            except NotFound as e:
                outcomes[i] = e
    return outcomes


def _parcel_of(event: DomainEvent) -> str:
    return event.parcel_id if isinstance(event, _PARCEL_FACTS) else ""


def _apply(tx: LegacyTransaction, event: DomainEvent) -> str:
    if not isinstance(event, _PARCEL_FACTS):
        return "not pushed"  # outside the subscription's filter: nothing to write
    fact = Fact(event.event_id, event.event_type, event.parcel_id, event.occurred_at)
    if not tx.claim(fact):
        return "duplicate"
    row = tx.parcel(event.parcel_id)
    if row is None:
        raise NotFound(
            f"parcel {event.parcel_id} is not in the monolith's parcels table: {event.event_type} "
            f"{event.event_id} cannot be written back (it is retried, then dead-lettered; replay "
            "it once the parcel exists there)"
        )
    changes = changes_for(event)
    verdict = _verdict(tx, fact, row, changes["status"])
    if verdict is not None:
        return verdict
    changed = {k: v for k, v in changes.items() if not _same(row.values.get(k), v)}
    if not changed:
        return "unchanged"
    if row.written_by == MONOLITH and not row.pulled:
        # The monolith's latest change is not in Meridian yet: marked as the bridge's, the row
        # would be skipped by the pull and that change lost. Left the monolith's, the pull
        # brings it with these columns, which Meridian already holds.
        tx.update_parcel(event.parcel_id, changed, as_bridge=False)
        return "updated, the monolith's change still to pull"
    tx.update_parcel(event.parcel_id, changed)
    return "updated"


def _verdict(tx: LegacyTransaction, fact: Fact, row: LegacyParcel, status: str) -> str | None:
    """Why the event changes nothing (steps 3 to 5), or None if it is to be applied."""
    if tx.newer_fact(fact):
        return "stale"
    if row.status == status:
        return None
    if ParcelStatus(row.status) in TERMINAL_STATES:
        return "final"
    if row.written_by == MONOLITH and row.updated_at > fact.occurred_at:
        winner, rule = decide_status(status, row.status, fact.occurred_at, row.updated_at)
        if winner is Source.MONOLITH:
            log.info(
                "the monolith's status stands",
                parcel=fact.parcel_id,
                monolith=row.status,
                meridian=status,
                rule=rule.value,
            )
            return "monolith wins"
    return None


def _same(current: Any, wanted: Any) -> bool:
    """Equal as the monolith stores them: its numerics come back as Decimal, timestamps in the
    session's zone."""
    if current is None or wanted is None:
        return current is wanted
    if isinstance(wanted, float) or isinstance(current, float):
        return abs(float(current) - float(wanted)) < 1e-9
    if isinstance(wanted, datetime) and isinstance(current, datetime):
        return current == wanted
    return bool(current == wanted)
