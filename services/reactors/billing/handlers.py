"""Billing: one ledger entry per billable event and one charge on the client's billing API.

The charge carries an idempotency key derived from the event id, so a redelivery (even after a
crash between the charge and the ledger write) is never charged twice; the ledger entry and the
processed-event record commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from meridian.domain.errors import NotFound
from meridian.domain.events import DomainEvent, ParcelDelivered, ShipmentClosed
from meridian.idempotency import already_processed, event_ledger_path, mark_processed
from meridian.ports import BillingApi, Charge, DocumentStore, Transaction

CONSUMER = "billing"
TARIFFS = "billing_tariffs"
LEDGER = "billing_ledger"


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    billing: BillingApi
    clock: Callable[[], datetime]


def charge_for(event: DomainEvent, store: DocumentStore) -> Charge | None:
    """What ``event`` costs its client, from the client's tariff (else the default tariff).

    No tariff at all is an error, not a free delivery: the event is retried, then dead-lettered,
    and replayed once the tariff exists.
    """
    if not isinstance(event, ParcelDelivered | ShipmentClosed):
        return None
    tariff = store.get(f"{TARIFFS}/{event.client_id}") or store.get(f"{TARIFFS}/default")
    if tariff is None:
        raise NotFound(f"no billing tariff for client {event.client_id} (nor a default tariff)")
    if isinstance(event, ParcelDelivered):
        amount, reference = tariff.data["per_delivery_minor"], event.parcel_id
        description = f"delivery of parcel {event.parcel_id}"
    else:
        amount, reference = tariff.data.get("per_shipment_minor", 0), event.shipment_id
        description = f"shipment {event.shipment_id} closed"
    return Charge(
        client_id=event.client_id,
        reference=reference,
        amount_minor=int(amount),
        currency=str(tariff.data.get("currency", "INR")),
        description=description,
    )


def bill(event: DomainEvent, deps: Deps) -> str:
    if deps.store.get(event_ledger_path(CONSUMER, event.event_id)) is not None:
        return "duplicate"
    charge = charge_for(event, deps.store)
    if charge is None:
        return "not billable"
    charge_id = deps.billing.charge(charge, idempotency_key=f"meridian-{event.event_id}")
    now = deps.clock()

    def record(tx: Transaction) -> str:
        if already_processed(tx, CONSUMER, event.event_id):
            return "duplicate"
        tx.create(
            f"{LEDGER}/{event.event_id}",
            {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "client_id": charge.client_id,
                "reference": charge.reference,
                "amount_minor": charge.amount_minor,
                "currency": charge.currency,
                "description": charge.description,
                "charge_id": charge_id,
                "occurred_at": event.occurred_at,
                "recorded_at": now,
            },
        )
        mark_processed(tx, CONSUMER, event.event_id, now)
        return f"charged {charge_id}"

    return deps.store.run_transaction(record)
