"""Customer SMS: out for delivery (with the tracking link), ETA moved beyond a threshold,
delivered, delivery failed. The only service that talks to the SMS gateway.

Each message is sent with an idempotency key derived from the event id and the parcel, so a
redelivered event (even after a crash between the send and the ledger write) is not sent twice;
the notification log and the processed-event record commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meridian.domain.events import (
    DeliveryFailed,
    DomainEvent,
    ParcelDelivered,
    ParcelOutForDelivery,
    RouteEtaUpdated,
)
from meridian.idempotency import already_processed, event_ledger_path, mark_processed
from meridian.ports import DocumentStore, SmsGateway, Transaction
from meridian.tracking import TrackingTokens

CONSUMER = "notification"
CONTACTS = "notification_contacts"  # per parcel: phone and the last ETA the customer was told
SENT = "notifications"
ETA_CHANGE_THRESHOLD = timedelta(minutes=15)


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    sms: SmsGateway
    tracking: TrackingTokens
    tracking_base_url: str
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class Sms:
    parcel_id: str
    to: str
    body: str
    kind: str
    eta: datetime | None = None


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M UTC")


def messages_for(event: DomainEvent, deps: Deps) -> list[Sms]:
    """The SMS ``event`` calls for (none for ETA moves within the threshold)."""
    if isinstance(event, ParcelOutForDelivery):
        link = f"{deps.tracking_base_url}/track/{event.parcel_id}?token={deps.tracking.issue(event.parcel_id)}"
        body = f"Your parcel {event.parcel_id} is out for delivery, due by {_hhmm(event.window_end)}. Track it: {link}"
        return [Sms(event.parcel_id, event.recipient_phone, body, "out_for_delivery")]
    if isinstance(event, ParcelDelivered):
        body = f"Your parcel {event.parcel_id} was delivered at {_hhmm(event.delivered_at)}."
        return [Sms(event.parcel_id, event.recipient_phone, body, "delivered")]
    if isinstance(event, DeliveryFailed):
        body = f"We could not deliver your parcel {event.parcel_id} ({event.reason}). We will try again."
        return [Sms(event.parcel_id, event.recipient_phone, body, "failed")]
    if isinstance(event, RouteEtaUpdated):
        out = []
        for stop in event.stops:
            contact = deps.store.get(f"{CONTACTS}/{stop.parcel_id}")
            if contact is None or contact.data.get("done"):
                continue  # not out for delivery yet (or already delivered): nothing to tell
            told = contact.data.get("last_eta")
            if told is None:
                # The first ETA after out-for-delivery is recorded, not sent: that SMS just went.
                out.append(Sms(stop.parcel_id, contact.data["phone"], "", "eta_baseline", stop.eta))
            elif abs(stop.eta - told) > ETA_CHANGE_THRESHOLD:
                body = f"Your parcel {stop.parcel_id} is now expected at {_hhmm(stop.eta)}."
                out.append(Sms(stop.parcel_id, contact.data["phone"], body, "eta_changed", stop.eta))
        return out
    return []


def _contact_update(event: DomainEvent, sms: Sms) -> dict[str, Any]:
    if isinstance(event, ParcelOutForDelivery):
        return {"parcel_id": sms.parcel_id, "phone": sms.to, "last_eta": None, "done": False}
    if isinstance(event, ParcelDelivered):
        return {"parcel_id": sms.parcel_id, "done": True}
    return {"parcel_id": sms.parcel_id, "last_eta": sms.eta} if sms.eta else {}


def notify(event: DomainEvent, deps: Deps) -> str:
    if deps.store.get(event_ledger_path(CONSUMER, event.event_id)) is not None:
        return "duplicate"
    outgoing = messages_for(event, deps)
    receipts = {}
    for sms in outgoing:
        if sms.body:
            receipt = deps.sms.send(sms.to, sms.body, f"meridian-{event.event_id}-{sms.parcel_id}")
            receipts[sms.parcel_id] = receipt.message_id
    now = deps.clock()

    def record(tx: Transaction) -> str:
        if already_processed(tx, CONSUMER, event.event_id):
            return "duplicate"
        for sms in outgoing:
            update = _contact_update(event, sms)
            if update:
                tx.set(f"{CONTACTS}/{sms.parcel_id}", update, merge=True)
            if sms.body:
                tx.set(
                    f"{SENT}/{event.event_id}:{sms.parcel_id}",
                    {
                        "parcel_id": sms.parcel_id,
                        "event_id": event.event_id,
                        "kind": sms.kind,
                        "to": sms.to,
                        "body": sms.body,
                        "gateway_message_id": receipts[sms.parcel_id],
                        "sent_at": now,
                    },
                )
        mark_processed(tx, CONSUMER, event.event_id, now)
        return f"{len(receipts)} sms sent"

    return deps.store.run_transaction(record)
