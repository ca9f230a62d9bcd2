"""Proof-of-delivery photos: the assigned driver attaches the photo of a delivered parcel.

The photo goes to the blob store (a local directory embedded, Cloud Storage in GCP) and its
reference onto the parcel document as ``pod_image``. That commit is the event: the event publisher
maps it to PodImageReceived, and the POD reactor finalises the parcel's POD record with it.

Blobs are content-addressed (``pod/{parcel}/{sha256}.{ext}``), so a retried upload of the same
photo stores the same blob and records nothing new: the upload is idempotent without a key. A
different photo replaces the reference and is announced again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from meridian.domain.actors import Actor
from meridian.domain.errors import Conflict, NotFound, PermissionDenied
from meridian.ports import BlobStore, DocumentStore, Transaction

MAX_IMAGE_BYTES = 5 * 1024 * 1024
# The declared type must match the bytes: a driver app that mislabels a file gets told so here,
# not by a broken image in a client's POD report later.
SIGNATURES = {"image/jpeg": (b"\xff\xd8\xff", "jpg"), "image/png": (b"\x89PNG\r\n\x1a\n", "png")}
POD_IMAGE_FIELD = "pod_image"


def attach_pod_image(
    parcel_id: str,
    image: bytes,
    content_type: str,
    actor: Actor,
    store: DocumentStore,
    blobs: BlobStore,
    clock: Callable[[], datetime],
) -> dict[str, Any]:
    """Store the photo and record its reference on the delivered parcel (one transaction)."""
    actor.require("driver")
    _check_may_attach(store.get(f"parcels/{parcel_id}"), parcel_id, actor)
    digest = hashlib.sha256(image).hexdigest()
    extension = SIGNATURES[content_type][1]
    # The blob goes first: a reference is only ever recorded for bytes that are stored.
    reference = blobs.put(f"pod/{parcel_id}/{digest}.{extension}", image, content_type)
    now = clock()
    recorded = {
        "ref": reference,
        "content_type": content_type,
        "size_bytes": len(image),
        "sha256": digest,
        "uploaded_by": actor.subject,
        "uploaded_at": now,
    }

    def record(tx: Transaction) -> dict[str, Any]:
        document = tx.get(f"parcels/{parcel_id}")
        _check_may_attach(document, parcel_id, actor)
        assert document is not None
        current = document.data.get(POD_IMAGE_FIELD) or {}
        if current.get("sha256") == digest:
            return dict(current)  # the same photo again: nothing new to announce
        tx.update(f"parcels/{parcel_id}", {POD_IMAGE_FIELD: recorded, "updated_at": now})
        return recorded

    stored = store.run_transaction(record)
    return {
        "parcel_id": parcel_id,
        "photo_ref": stored["ref"],
        "content_type": stored["content_type"],
        "size_bytes": stored["size_bytes"],
        "uploaded_at": stored["uploaded_at"].isoformat(),
    }


def _check_may_attach(document: Any, parcel_id: str, actor: Actor) -> None:
    if document is None:
        raise NotFound(f"no parcel {parcel_id}")
    if document.data.get("driver_id") != actor.subject:
        raise PermissionDenied(f"parcel {parcel_id} is not assigned to driver {actor.subject}")
    status = str(document.data.get("status"))
    if status != "DELIVERED":
        raise Conflict(f"parcel {parcel_id} is {status}: a POD photo is for a delivered parcel")
