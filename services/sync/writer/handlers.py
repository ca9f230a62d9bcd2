"""Meridian's parcel facts, written back into the monolith's ``parcels`` table (and the rows of
the shipments Meridian creates, into its ``clients``, ``shipments`` and ``parcels``).

Every move of a parcel in Meridian (planned, assigned, out for delivery, delivered, failed,
re-queued, returned) is pushed, not only the deliveries, failures, returns and assignments the
monolith's reports read: reconciliation compares the whole status, so the monolith must follow
each move. Each event is applied in one transaction with its id in ``bridge_processed_events``
(``LegacyTransaction.claim``), so a redelivery changes nothing. Per event, in this order:

1. **Already processed**: nothing (``duplicate``).
2. **A parcel the monolith does not have** (created in Meridian): its shipment, the shipment's
   parcels and its client are inserted from Meridian's documents (``bring_in``), as the bridge's
   rows (``written_by = 'meridian'``: the pull never brings them back), in the event's
   transaction, and the event is then applied to the new row like any other. The monolith's
   reports and billing read these tables, so Meridian's own shipments must be there. Only a
   parcel Meridian has no document for either is ``NotFound``, answered 404, so Pub/Sub retries
   it and then dead-letters it like every reactor's poison event; nothing is recorded.
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
   brings the write back; except over a monolith change not applied in Meridian yet, which keeps
   ``written_by = 'monolith'`` so that change is not lost: the pull then brings the row, whose
   pushed columns Meridian already holds. Not applied means the row is past the pull's cursor,
   or its link (``sync_links``) holds an older version: the cursor moves once the page is
   published, before the apply job re-reads the page's rows, and that re-read takes only
   ``written_by = 'monolith'`` rows within the page, so a row marked the bridge's in between would
   drop the monolith's edit.

``ShipmentCreated`` brings a shipment created in Meridian in at once (step 2 alone), so it reaches
the monolith before any of its parcels moves. The rows come from Meridian's documents as they are
when the event is handled (the events do not carry the recipient, the stop or the weight); a
client Meridian has no document for gets its id as its name (the monolith requires one).

Events the bridge caused (a parcel applied from the monolith by the sync jobs) carry the message
attribute ``origin = monolith`` (set by the event publisher); the writer's subscription filters
them out (``schemas/catalog.yaml``), so they never reach here. The outcome of each step is
recorded as processed all the same: the event is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, assert_never

from meridian import metrics
from meridian.domain import events as ev
from meridian.domain.errors import NotFound
from meridian.domain.events import DomainEvent
from meridian.domain.states import TERMINAL_STATES, ParcelStatus
from meridian.observability import get_logger
from meridian.ports import DocumentStore
from services.sync.conflicts import Source, decide_status
from services.sync.entities import CLIENTS, MONOLITH, PARCELS, SHIPMENTS
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
PUSHED_EVENT_TYPES = (ev.ShipmentCreated.event_type, *(t.event_type for t in _PARCEL_FACTS))


@dataclass(frozen=True)
class Deps:
    tables: LegacyTables
    store: DocumentStore  # Meridian's documents, read to insert what the monolith lacks
    # Read once a batch has committed: each event written is observed in
    # meridian_sync_lag_seconds{direction="to_monolith"} (the commit - the event's time).
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


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
    savepoint: an event whose parcel neither the monolith nor Meridian has gets its ``NotFound``
    (retried, then dead-lettered) and the others commit. Parcels are locked in id order, so two
    batches never wait on each other in a cycle over existing rows; a parcel's events keep their
    order. (Two batches inserting the same new shipment's rows may: PostgreSQL then aborts one,
    ``Unavailable``, and Pub/Sub retries it.) A failed transaction raises, for every event of the
    batch."""
    outcomes: list[str | BaseException] = ["" for _ in events]
    order = sorted(range(len(events)), key=lambda i: _parcel_of(events[i]))
    with deps.tables.transaction() as tx:
        for i in order:
            try:
                with tx.savepoint():
                    outcomes[i] = _apply(tx, events[i], deps)
            except NotFound as e:
                outcomes[i] = e
    committed = deps.clock()  # counted once committed: a failed transaction raised above
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, str) and outcome.startswith(_WRITTEN):
            metrics.sync_lag("to_monolith", (committed - event.occurred_at).total_seconds())
    return outcomes


# The outcomes of an event that changed the monolith's tables (``_apply``'s).
_WRITTEN = ("updated", "inserted")


def _parcel_of(event: DomainEvent) -> str:
    # A shipment's creation sorts first: its rows are in before its parcels' facts.
    return event.parcel_id if isinstance(event, _PARCEL_FACTS) else ""


def bring_in(tx: LegacyTransaction, store: DocumentStore, shipment_id: str, why: str) -> int:
    """Insert the shipment, its client and its parcels, as Meridian's documents have them, where
    the monolith lacks them; how many rows were inserted. NotFound when Meridian has no document
    for the shipment or one of its parcels (``why``: the event, for the message)."""
    shipment = store.get(SHIPMENTS.path(shipment_id))
    if shipment is None:
        raise NotFound(
            f"shipment {shipment_id} is neither in the monolith's tables nor in Meridian: {why} "
            "cannot be written back (it is retried, then dead-lettered; replay it once the "
            "shipment exists)"
        )
    client_id = str(shipment.data["client_id"])
    client = store.get(CLIENTS.path(client_id))
    client_row = (
        CLIENTS.to_row(client.data)
        if client is not None
        else {"id": client_id, "name": client_id, "email": None, "deleted_at": None}
    )
    parcel_ids = [str(p) for p in shipment.data.get("parcel_ids", ())]
    parcels = store.get_all([PARCELS.path(p) for p in parcel_ids])
    lacking = sorted(p for p in parcel_ids if parcels[PARCELS.path(p)] is None)
    if lacking:
        raise NotFound(
            f"parcel(s) {', '.join(lacking)} of shipment {shipment_id} are not in Meridian: {why} "
            "cannot be written back (it is retried, then dead-lettered)"
        )
    rows = [(CLIENTS, client_row), (SHIPMENTS, SHIPMENTS.to_row(shipment.data))]
    rows += [(PARCELS, PARCELS.to_row(d.data)) for d in parcels.values() if d is not None]
    return sum(tx.insert(target, row) for target, row in rows)


def _shipment_created(tx: LegacyTransaction, event: ev.ShipmentCreated, deps: Deps) -> str:
    # Subject "shipments/{id}": never a parcel's id (identifiers hold no "/"), so no parcel's
    # stale check (newer_fact) ever sees this event.
    subject = SHIPMENTS.path(event.shipment_id)
    if not tx.claim(Fact(event.event_id, event.event_type, subject, event.occurred_at)):
        return "duplicate"
    inserted = bring_in(tx, deps.store, event.shipment_id, f"{event.event_type} {event.event_id}")
    return f"inserted {inserted} row(s)" if inserted else "unchanged"


def _apply(tx: LegacyTransaction, event: DomainEvent, deps: Deps) -> str:
    if isinstance(event, ev.ShipmentCreated):
        return _shipment_created(tx, event, deps)
    if not isinstance(event, _PARCEL_FACTS):
        return "not pushed"  # outside the subscription's filter: nothing to write
    fact = Fact(event.event_id, event.event_type, event.parcel_id, event.occurred_at)
    if not tx.claim(fact):
        return "duplicate"
    row, inserted = tx.parcel(event.parcel_id), ""
    if row is None:
        why = f"{event.event_type} {event.event_id} of parcel {event.parcel_id}"
        count = bring_in(tx, deps.store, event.shipment_id, why)
        row, inserted = tx.parcel(event.parcel_id), f"inserted {count} row(s), "
        if row is None:
            raise NotFound(
                f"parcel {event.parcel_id} is not among the parcels of its shipment "
                f"{event.shipment_id} in Meridian: {why} cannot be written back (it is retried, "
                "then dead-lettered)"
            )
    return inserted + _write(tx, event, fact, row, deps.store)


def _write(
    tx: LegacyTransaction, event: ParcelFact, fact: Fact, row: LegacyParcel, store: DocumentStore
) -> str:
    changes = changes_for(event)
    verdict = _verdict(tx, fact, row, changes["status"])
    if verdict is not None:
        return verdict
    changed = {k: v for k, v in changes.items() if not _same(row.values.get(k), v)}
    if not changed:
        return "unchanged"
    if row.written_by == MONOLITH and not _in_meridian(row, store):
        # The monolith's latest change is not in Meridian yet: marked as the bridge's, the row
        # would be skipped by the pull and that change lost. Left the monolith's, the pull
        # brings it with these columns, which Meridian already holds.
        tx.update_parcel(event.parcel_id, changed, as_bridge=False)
        return "updated, the monolith's change still to pull"
    tx.update_parcel(event.parcel_id, changed)
    return "updated"


def _in_meridian(row: LegacyParcel, store: DocumentStore) -> bool:
    """Whether the row's latest change is applied in Meridian. Past the pull's cursor is not
    enough (the page may be published and not yet applied): the link must hold the version, and
    a parcel Meridian holds without a link (created in Meridian, then edited in the monolith) has
    had no change of the monolith's applied. With neither, only the cursor can tell."""
    if not row.pulled:
        return False
    link_path, path = PARCELS.link_path(row.parcel_id), PARCELS.path(row.parcel_id)
    found = store.get_all([link_path, path])
    link = found[link_path]
    if link is not None:
        return int(link.data["legacy_version"]) >= row.version
    return found[path] is None


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
