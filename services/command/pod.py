"""Proof-of-delivery photos: the assigned driver uploads the photo of a delivered parcel.

``PUT /v1/parcels/{parcel_id}/pod-image`` with an ``image/jpeg`` or ``image/png`` body stores the
bytes in the blob store (a local directory embedded, Cloud Storage in GCP) and records the
reference on the parcel document as ``pod_image``. That commit is the event: the event publisher
maps it to PodImageReceived, and the POD reactor finalises the parcel's POD record with it.

Blobs are content-addressed (``pod/{parcel}/{sha256}.{ext}``), so a retried upload of the same
photo stores the same blob and records nothing new: the PUT is idempotent without a key. A
different photo replaces the reference and is announced again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meridian.domain.actors import Actor
from meridian.domain.errors import Conflict, NotFound, PermissionDenied, Unavailable
from meridian.domain.model import Identifier
from meridian.ports import BlobStore, DocumentStore, Transaction
from services.command.handlers import Deps
from services.command.web import Caller

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


async def _read_image(request: Request, content_type: str, length: int | None) -> bytes:
    """The body, refused early when too large or not the image type it claims to be."""
    if content_type not in SIGNATURES:
        raise HTTPException(415, f"send image/jpeg or image/png, not {content_type or 'nothing'}")
    if length is not None and length > MAX_IMAGE_BYTES:
        raise HTTPException(413, f"a POD photo is at most {MAX_IMAGE_BYTES} bytes")
    image = bytearray()
    async for chunk in request.stream():
        image += chunk
        if len(image) > MAX_IMAGE_BYTES:  # a chunked body has no length to check up front
            raise HTTPException(413, f"a POD photo is at most {MAX_IMAGE_BYTES} bytes")
    if not image.startswith(SIGNATURES[content_type][0]):
        raise HTTPException(415, f"the body is not a {content_type} image")
    return bytes(image)


def _blob_store(request: Request) -> BlobStore:
    """The blob store bootstrap provides in app state, built on the first upload: the command
    service's other routes never need it, so a deployment without a POD bucket still serves them."""
    provide: Callable[[], BlobStore] | None = getattr(request.app.state, "blobs", None)
    if provide is None:
        raise Unavailable("proof-of-delivery photos need a blob store; none was configured")
    return provide()


def router() -> APIRouter:
    """The POD photo route."""
    routes = APIRouter(tags=["parcels"])

    @routes.put("/v1/parcels/{parcel_id}/pod-image", status_code=202)
    async def upload_pod_image(
        parcel_id: Identifier,
        request: Request,
        caller: Caller,
        content_type: Annotated[str, Header()] = "",
        content_length: Annotated[int | None, Header()] = None,
    ) -> JSONResponse:
        media_type = content_type.split(";", 1)[0].strip().lower()
        image = await _read_image(request, media_type, content_length)
        deps: Deps = request.app.state.deps
        answer = await run_in_threadpool(
            attach_pod_image,
            parcel_id,
            image,
            media_type,
            caller,
            deps.store,
            _blob_store(request),
            deps.clock,
        )
        return JSONResponse(answer, status_code=202)

    return routes
