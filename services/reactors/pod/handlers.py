"""Proof of delivery: the POD record of each parcel, complete once the delivery is recorded and
every referenced image is in the blob store; the parcel's status view then shows ``pod_complete``.

ParcelDelivered and PodImageReceived can arrive in either order; each merges what it knows and the
record is re-judged. The record, the status view and the processed-event entry commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meridian.app.idempotency import already_processed, mark_processed
from meridian.domain.events import DomainEvent, ParcelDelivered, PodImageReceived
from meridian.ports import BlobStore, DocumentStore, Transaction

CONSUMER = "pod"
RECORDS = "pod_records"


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    blobs: BlobStore
    clock: Callable[[], datetime]


def is_complete(record: Mapping[str, Any], stored: Callable[[str], bool]) -> bool:
    """Delivered, with a signature or a photo, and every referenced photo actually stored."""
    if not record.get("delivered_at"):
        return False
    photo, signature = record.get("photo_ref"), record.get("signature_ref")
    if not (photo or signature):
        return False
    return photo is None or stored(photo)


def _update(event: DomainEvent) -> dict[str, Any]:
    if isinstance(event, ParcelDelivered):
        update: dict[str, Any] = {
            "parcel_id": event.parcel_id,
            "client_id": event.client_id,
            "delivered_at": event.delivered_at,
            "driver_id": event.driver_id,
            "position": {"lat": event.lat, "lng": event.lng},
            "signature_ref": event.pod_signature_ref,
        }
        if event.pod_photo_ref:
            update["photo_ref"] = event.pod_photo_ref
        return update
    if isinstance(event, PodImageReceived):
        return {
            "parcel_id": event.parcel_id,
            "photo_ref": event.blob_ref,
            "photo_content_type": event.content_type,
            "photo_size_bytes": event.size_bytes,
        }
    return {}


def finalise_pod(event: DomainEvent, deps: Deps) -> str:
    prepared = pod_transaction(event, deps)
    return prepared if isinstance(prepared, str) else deps.store.run_transaction(prepared)


def pod_transaction(event: DomainEvent, deps: Deps) -> Callable[[Transaction], str] | str:
    """The transaction that records ``event`` on the POD record (what a batch commits with the
    others), or the outcome when there is nothing to record."""
    update = _update(event)
    if not update:
        return "not a POD event"
    now = deps.clock()
    parcel_id = update["parcel_id"]
    existing = deps.store.get(f"{RECORDS}/{parcel_id}")
    merged = {**(existing.data if existing else {}), **update}
    # Blob existence is checked outside the transaction (it is I/O on another system); a photo only
    # ever appears, so a stale "missing" is corrected by the PodImageReceived that follows.
    photo_stored = bool(merged.get("photo_ref")) and deps.blobs.exists(merged["photo_ref"])

    def record(tx: Transaction) -> str:
        if already_processed(tx, CONSUMER, event.event_id):
            return "duplicate"
        current = tx.get(f"{RECORDS}/{parcel_id}")
        data = {**(current.data if current else {}), **update}
        complete = is_complete(data, lambda ref: ref == merged.get("photo_ref") and photo_stored)
        tx.set(
            f"{RECORDS}/{parcel_id}",
            {
                **update,
                "complete": complete,
                "updated_at": now,
                "completed_at": now if complete else None,
            },
            merge=True,
        )
        tx.set(
            f"parcel_status/{parcel_id}",
            {"parcel_id": parcel_id, "pod_complete": complete},
            merge=True,
        )
        mark_processed(tx, CONSUMER, event.event_id, now)
        return "pod complete" if complete else "pod pending"

    return record
