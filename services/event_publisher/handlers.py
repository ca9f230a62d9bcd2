"""Committed Firestore changes → typed domain events, each published on its catalog topic.

This is the target of Eventarc's Firestore triggers (the native outbox): it sees every committed
write of a parcel or a shipment and publishes the business fact it represents. Event ids derive
from the document path and its update time, so a redelivered change republishes the same id and
consumers deduplicate it. A change the migration bridge applied from the monolith is published with
the attribute ``origin = monolith`` (``SYNC_COMMAND``), so the bridge does not write it back.

It also counts the deliveries and the failed attempts (``meridian.metrics``) once their events are
published: it sees each committed change once, so each is counted once, but a change Eventarc
redelivers (at least once, rarely twice) is published and counted again; it holds no ledger to
tell, and the counters' help text says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from meridian import metrics
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.domain.errors import DecodeError
from meridian.domain.events import DomainEvent, derive_event_id
from meridian.ports import Publisher


@dataclass(frozen=True)
class DocumentChange:
    """One committed write as Eventarc reports it; ``old``/``new`` are None for created/deleted."""

    path: str
    old: Mapping[str, Any] | None
    new: Mapping[str, Any] | None
    update_time: datetime


@dataclass(frozen=True)
class Deps:
    publisher: Publisher
    codec: EventCodec


# A change the migration bridge applied from the monolith (its sync jobs write with this command
# name, services/sync/entities.py's SYNC_COMMAND) is published with the attribute origin=monolith,
# so the bridge's push subscription (legacy-writer) does not write it back into the monolith.
SYNC_COMMAND = "SyncFromMonolith"
ORIGIN, FROM_MONOLITH = "origin", "monolith"


def _from_monolith(change: DocumentChange) -> bool:
    last = (change.new or {}).get("_last_command")
    return isinstance(last, Mapping) and last.get("name") == SYNC_COMMAND


def _parcel_event(change: DocumentChange, new: Mapping[str, Any]) -> DomainEvent | None:
    if change.old is None:
        return None  # a new parcel is announced by its shipment's ShipmentCreated
    old_status = change.old.get("status")
    status = new.get("status")
    if status == old_status or status is None:
        return _pod_image_event(change, new)  # else not a state change: a field update
    base = {
        "event_id": derive_event_id(change.path, change.update_time.isoformat(), str(status)),
        "occurred_at": change.update_time,
        "parcel_id": new["parcel_id"],
        "shipment_id": new["shipment_id"],
        "client_id": new["client_id"],
    }
    stop, recipient = new["stop"], new["recipient"]
    on_route: dict[str, Any] = {
        "route_id": new.get("route_id"),
        "driver_id": new.get("driver_id"),
        "vehicle_id": new.get("vehicle_id"),
    }
    if status == "PLANNED":
        return ev.ParcelPlanned(**base, window_id=new["window_id"])
    if status == "ASSIGNED":
        return ev.ParcelAssigned(
            **base,
            window_id=new.get("window_id"),
            **on_route,
            stop_sequence=new.get("stop_sequence"),
        )
    if status == "OUT_FOR_DELIVERY":
        return ev.ParcelOutForDelivery(
            **base,
            **on_route,
            recipient_phone=recipient["phone"],
            lat=stop["location"]["lat"],
            lng=stop["location"]["lng"],
            address=stop["address"],
            window_start=stop["window"]["start"],
            window_end=stop["window"]["end"],
            attempt=new["attempts"],
            stop_sequence=new.get("stop_sequence"),
        )
    if status == "DELIVERED":
        position, pod = new["delivered_position"], new.get("pod") or {}
        return ev.ParcelDelivered(
            **base,
            **on_route,
            delivered_at=new["delivered_at"],
            lat=position["lat"],
            lng=position["lng"],
            window_end=stop["window"]["end"],
            recipient_phone=recipient["phone"],
            pod_signature_ref=pod.get("signature_ref"),
            pod_photo_ref=pod.get("photo_ref"),
        )
    if status == "DELIVERY_FAILED":
        return ev.DeliveryFailed(
            **base,
            **on_route,
            failed_at=change.update_time,
            reason=new.get("failure_reason") or "unknown",
            attempt=max(1, new["attempts"]),
            recipient_phone=recipient["phone"],
        )
    if status == "CREATED":
        return ev.ParcelRequeued(
            **base, previous_status=str(old_status), reason=new.get("failure_reason")
        )
    if status == "RETURNED":
        return ev.ParcelReturned(**base, reason=new.get("failure_reason"))
    raise DecodeError(f"{change.path}: unknown parcel status {status!r}")


def _pod_image_event(change: DocumentChange, new: Mapping[str, Any]) -> DomainEvent | None:
    """A new proof-of-delivery photo recorded on the parcel (``services/command/handlers/pod.py``)."""
    image = new.get("pod_image")
    if not image or image == (change.old or {}).get("pod_image"):
        return None
    return ev.PodImageReceived(
        # From the blob, not the write: a redelivered change, or the same photo recorded again,
        # is the same event.
        event_id=derive_event_id(change.path, "pod_image", image["ref"]),
        occurred_at=change.update_time,
        parcel_id=new["parcel_id"],
        blob_ref=image["ref"],
        content_type=image["content_type"],
        size_bytes=image["size_bytes"],
    )


def _shipment_event(change: DocumentChange, new: Mapping[str, Any]) -> DomainEvent | None:
    event_id = derive_event_id(change.path, change.update_time.isoformat(), str(new.get("status")))
    if change.old is None:
        return ev.ShipmentCreated(
            event_id=event_id,
            occurred_at=change.update_time,
            shipment_id=new["shipment_id"],
            client_id=new["client_id"],
            parcel_ids=tuple(new["parcel_ids"]),
        )
    if new.get("status") == "CLOSED" and change.old.get("status") != "CLOSED":
        counts = new.get("counts", {})
        return ev.ShipmentClosed(
            event_id=event_id,
            occurred_at=change.update_time,
            shipment_id=new["shipment_id"],
            client_id=new["client_id"],
            delivered_count=counts.get("DELIVERED", 0),
            failed_count=counts.get("DELIVERY_FAILED", 0),
            returned_count=counts.get("RETURNED", 0),
        )
    return None


def event_for_change(change: DocumentChange) -> DomainEvent | None:
    """The business fact a committed write represents, if any."""
    if change.new is None:
        return None  # deletions of parcels and shipments are housekeeping, not business facts
    collection = change.path.split("/", 1)[0]
    try:
        if collection == "parcels":
            return _parcel_event(change, change.new)
        if collection == "shipments":
            return _shipment_event(change, change.new)
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(
            f"{change.path}: document does not carry what its event needs: {e!r}"
        ) from None
    return None


def publish_change(
    change: DocumentChange, deps: Deps, traceparent: str | None = None
) -> DomainEvent | None:
    outcome = publish_changes([(change, traceparent)], deps)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def publish_changes(
    changes: Sequence[tuple[DocumentChange, str | None]], deps: Deps
) -> list[DomainEvent | BaseException | None]:
    """``publish_change`` for the changes delivered together, in one publish call (one broker
    transaction embedded, one batch on Pub/Sub); a change that is not a valid event gets its
    DecodeError and the others are published. If the publish fails, it fails for all of them,
    and nothing is counted. A change delivered twice in one batch is counted once."""
    outcomes: list[DomainEvent | BaseException | None] = []
    messages = []
    delivered: set[str] = set()  # event ids, so a repeat within the batch counts once
    failed: set[str] = set()
    for change, traceparent in changes:
        try:
            event = event_for_change(change)
            if event is not None:
                message = deps.codec.to_message(event, traceparent)
                if _from_monolith(change):
                    message = replace(
                        message, attributes={**message.attributes, ORIGIN: FROM_MONOLITH}
                    )
                messages.append(message)
                if type(event) is ev.ParcelDelivered:
                    delivered.add(event.event_id)
                elif type(event) is ev.DeliveryFailed:
                    failed.add(event.event_id)
            outcomes.append(event)
        except Exception as e:
            outcomes.append(e)
    for topic, batch in deps.codec.by_topic(messages).items():
        deps.publisher.publish(topic, batch)
    for _ in delivered:
        metrics.parcel_delivered()
    for _ in failed:
        metrics.delivery_failed()
    return outcomes
