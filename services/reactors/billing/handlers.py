"""Billing: one ledger entry per billable event and one charge on the client's billing API.

The charge carries an idempotency key derived from the event id, so a redelivery (even after a
crash between the charge and the ledger write) is never charged twice; the ledger entry and the
processed-event record commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from meridian.app.idempotency import already_processed, event_ledger_path, mark_processed
from meridian.domain.errors import NotFound
from meridian.domain.events import DomainEvent, ParcelDelivered, ShipmentClosed
from meridian.ports import BillingApi, Charge, DocumentStore, Transaction

CONSUMER = "billing"
TARIFFS = "billing_tariffs"
LEDGER = "billing_ledger"


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    billing: BillingApi
    clock: Callable[[], datetime]
    chargers: Executor | None = None  # charges a batch's events side by side; one by one if None


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
    outcome = bill_batch([event], deps)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def bill_batch(events: Sequence[DomainEvent], deps: Deps) -> list[str | BaseException]:
    """Charge each billable event of a batch (the charges side by side on ``deps.chargers``),
    then record every charged one in one transaction. An event whose charge failed gets its
    exception and is retried; one charged twice that way is charged once (the billing API's
    idempotency key)."""
    outcomes: list[str | BaseException] = ["duplicate"] * len(events)
    billable: dict[int, tuple[DomainEvent, Charge]] = {}
    for i, event in enumerate(events):
        if any(e.event_id == event.event_id for e, _ in billable.values()):
            continue
        if deps.store.get(event_ledger_path(CONSUMER, event.event_id)) is not None:
            continue
        try:
            charge = charge_for(event, deps.store)
        except Exception as e:
            outcomes[i] = e
            continue
        if charge is None:
            outcomes[i] = "not billable"
        else:
            billable[i] = (event, charge)
    run = deps.chargers.map if deps.chargers is not None else map
    charged: dict[int, tuple[DomainEvent, Charge, str]] = {}
    for i, result in zip(
        billable, run(lambda job: _charge(job[0], job[1], deps), billable.values()), strict=True
    ):
        if isinstance(result, BaseException):
            outcomes[i] = result
        else:
            charged[i] = (*billable[i], result)
    if not charged:
        return outcomes
    now = deps.clock()

    def record(tx: Transaction) -> dict[int, str]:
        # Every read of the transaction before its first write, as Firestore requires.
        done = {
            i for i, (e, _, _) in charged.items() if already_processed(tx, CONSUMER, e.event_id)
        }
        for i, (event, charge, charge_id) in charged.items():
            if i not in done:
                _record(tx, event, charge, charge_id, now)
        return {i: "duplicate" if i in done else f"charged {c[2]}" for i, c in charged.items()}

    for i, outcome in deps.store.run_transaction(record).items():
        outcomes[i] = outcome
    return outcomes


def _charge(event: DomainEvent, charge: Charge, deps: Deps) -> str | BaseException:
    try:
        return deps.billing.charge(charge, idempotency_key=f"meridian-{event.event_id}")
    except Exception as e:
        return e


def _record(
    tx: Transaction, event: DomainEvent, charge: Charge, charge_id: str, now: datetime
) -> None:
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
