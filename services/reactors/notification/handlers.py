"""Customer SMS: out for delivery (with the tracking link), ETA moved beyond a threshold,
delivered, delivery failed. The only service that talks to the SMS gateway.

Each message is sent with an idempotency key derived from the event id and the parcel, so a
redelivered event (even after a crash between the send and the ledger write) is not sent twice;
the notification log and the processed-event record commit in one transaction. The messages an
event's transaction records are counted (``meridian.metrics.sms_sent``) once it has committed, and
never for a redelivered event, which records nothing.

The tracking link opens the live map's customer page, ``{base}/map?parcel=ID#token=TOKEN``. The
token travels in the URL fragment, which a browser never sends to a server: it stays out of the
access logs of the live map, its load balancer and every proxy on the way, and out of the
``Referer`` the page sends. The page reads it from the fragment and presents it as a bearer token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from meridian import metrics
from meridian.app.idempotency import already_processed, event_ledger_path, mark_processed
from meridian.app.tracking import TrackingTokens
from meridian.domain.events import (
    DeliveryFailed,
    DomainEvent,
    ParcelDelivered,
    ParcelOutForDelivery,
    RouteEtaUpdated,
)
from meridian.ports import DocumentStore, SmsGateway, Transaction

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
    senders: Executor | None = None  # sends a batch's SMS side by side; one by one if None


@dataclass(frozen=True)
class Sms:
    parcel_id: str
    to: str
    body: str
    kind: str
    eta: datetime | None = None


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M UTC")


Contacts = dict[str, dict[str, Any] | None]  # parcel → its contact as this batch has left it


def _load_contacts(parcels: Sequence[str], deps: Deps, known: Contacts) -> None:
    """Read the contacts of ``parcels`` not yet in ``known`` in one batched read by id (a
    contact's id is its parcel's), rather than one read per stop of the route."""
    missing = [p for p in dict.fromkeys(parcels) if p not in known]
    for path, contact in deps.store.get_all([f"{CONTACTS}/{p}" for p in missing]).items():
        known[path.rpartition("/")[2]] = dict(contact.data) if contact is not None else None


def tracking_link(deps: Deps, parcel_id: str) -> str:
    """The customer's link to the parcel on the live map, its token in the fragment."""
    token = deps.tracking.issue(parcel_id)
    query, fragment = urlencode({"parcel": parcel_id}), urlencode({"token": token})
    return f"{deps.tracking_base_url}/map?{query}#{fragment}"


def messages_for(event: DomainEvent, deps: Deps, known: Contacts | None = None) -> list[Sms]:
    """The SMS ``event`` calls for (none for ETA moves within the threshold). ``known`` holds the
    contacts as the events before this one in its batch left them."""
    known = {} if known is None else known
    if isinstance(event, ParcelOutForDelivery):
        link = tracking_link(deps, event.parcel_id)
        body = f"Your parcel {event.parcel_id} is out for delivery, due by {_hhmm(event.window_end)}. Track it: {link}"
        return [Sms(event.parcel_id, event.recipient_phone, body, "out_for_delivery")]
    if isinstance(event, ParcelDelivered):
        body = f"Your parcel {event.parcel_id} was delivered at {_hhmm(event.delivered_at)}."
        return [Sms(event.parcel_id, event.recipient_phone, body, "delivered")]
    if isinstance(event, DeliveryFailed):
        body = f"We could not deliver your parcel {event.parcel_id} ({event.reason}). We will try again."
        return [Sms(event.parcel_id, event.recipient_phone, body, "failed")]
    if isinstance(event, RouteEtaUpdated):
        _load_contacts([stop.parcel_id for stop in event.stops], deps, known)
        out = []
        for stop in event.stops:
            contact = known.get(stop.parcel_id)
            if contact is None or contact.get("done"):
                continue  # not out for delivery yet (or already delivered): nothing to tell
            told = contact.get("last_eta")
            if told is None:
                # The first ETA after out-for-delivery is recorded, not sent: that SMS just went.
                out.append(Sms(stop.parcel_id, contact["phone"], "", "eta_baseline", stop.eta))
            elif abs(stop.eta - told) > ETA_CHANGE_THRESHOLD:
                body = f"Your parcel {stop.parcel_id} is now expected at {_hhmm(stop.eta)}."
                out.append(Sms(stop.parcel_id, contact["phone"], body, "eta_changed", stop.eta))
        return out
    return []


def _contact_update(event: DomainEvent, sms: Sms) -> dict[str, Any]:
    if isinstance(event, ParcelOutForDelivery):
        return {"parcel_id": sms.parcel_id, "phone": sms.to, "last_eta": None, "done": False}
    if isinstance(event, ParcelDelivered):
        return {"parcel_id": sms.parcel_id, "done": True}
    return {"parcel_id": sms.parcel_id, "last_eta": sms.eta} if sms.eta else {}


@dataclass(frozen=True)
class _Prepared:
    """An event whose SMS went out, waiting for its batch's transaction."""

    event: DomainEvent
    outgoing: list[Sms]
    receipts: dict[str, str]


def _sender(deps: Deps) -> Callable[[tuple[DomainEvent, Sms]], str | BaseException]:
    def send(job: tuple[DomainEvent, Sms]) -> str | BaseException:
        """Send one SMS; the gateway's message id, or why it was not sent."""
        event, sms = job
        try:
            key = f"meridian-{event.event_id}-{sms.parcel_id}"
            return deps.sms.send(sms.to, sms.body, key).message_id
        except Exception as e:
            return e

    return send


def notify(event: DomainEvent, deps: Deps) -> str:
    outcome = notify_batch([event], deps)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def notify_batch(events: Sequence[DomainEvent], deps: Deps) -> list[str | BaseException]:
    """Send what each event calls for, then record every sent event in one transaction.

    Events are judged in order, each seeing the contacts as the ones before it left them (two ETA
    updates of a route in one batch tell a customer at most once, as one after the other would).
    An event whose SMS could not be sent gets its exception and is not recorded: it is retried,
    and its messages that did go out are not sent twice (the gateway's idempotency key).
    """
    outcomes: list[str | BaseException] = ["duplicate"] * len(events)
    decided: dict[int, tuple[DomainEvent, list[Sms]]] = {}
    known: Contacts = {}
    for i, event in enumerate(events):
        if any(e.event_id == event.event_id for e, _ in decided.values()):
            continue
        if deps.store.get(event_ledger_path(CONSUMER, event.event_id)) is not None:
            continue
        try:
            outgoing = messages_for(event, deps, known)
        except Exception as e:
            outcomes[i] = e
            continue
        for sms in outgoing:
            if update := _contact_update(event, sms):
                known[sms.parcel_id] = {**(known.get(sms.parcel_id) or {}), **update}
        decided[i] = (event, outgoing)
    # Every SMS of the batch is sent side by side (on ``deps.senders``), those of one event too
    # (an ETA update can tell dozens of customers): a batch waits for its slowest send, not for
    # the sum of them, however slow the gateway is.
    jobs = [(event, sms) for event, outgoing in decided.values() for sms in outgoing if sms.body]
    run = deps.senders.map if deps.senders is not None else map
    receipts = dict(
        zip(((e.event_id, s.parcel_id) for e, s in jobs), run(_sender(deps), jobs), strict=True)
    )
    prepared: dict[int, _Prepared] = {}
    for i, (event, outgoing) in decided.items():
        sent = {s.parcel_id: receipts[event.event_id, s.parcel_id] for s in outgoing if s.body}
        failed = [r for r in sent.values() if isinstance(r, BaseException)]
        if failed:
            outcomes[i] = failed[0]  # retried; the SMS that did go out are not sent twice
        else:
            prepared[i] = _Prepared(event, outgoing, {p: str(r) for p, r in sent.items()})
    if not prepared:
        return outcomes
    now = deps.clock()

    def record(tx: Transaction) -> dict[int, str]:
        # Every read of the transaction before its first write, as Firestore requires.
        fresh = {
            i for i, p in prepared.items() if not already_processed(tx, CONSUMER, p.event.event_id)
        }
        return {i: _record(tx, p, now) if i in fresh else "duplicate" for i, p in prepared.items()}

    recorded = 0
    for i, outcome in deps.store.run_transaction(record).items():
        outcomes[i] = outcome
        if outcome != "duplicate":
            recorded += len(prepared[i].receipts)
    if recorded:
        metrics.sms_sent(recorded)  # after the commit: the transaction may have run more than once
    return outcomes


def _record(tx: Transaction, prepared: _Prepared, now: datetime) -> str:
    event = prepared.event
    for sms in prepared.outgoing:
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
                    "gateway_message_id": prepared.receipts[sms.parcel_id],
                    "sent_at": now,
                },
            )
    mark_processed(tx, CONSUMER, event.event_id, now)
    return f"{len(prepared.receipts)} sms sent"
