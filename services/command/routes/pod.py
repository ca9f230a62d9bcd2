"""Proof-of-delivery photo route: ``PUT /v1/parcels/{parcel_id}/pod-image`` with an
``image/jpeg`` or ``image/png`` body, checked here (type, size, signature) and attached by
``handlers/pod.py``. The PUT is idempotent without a key (blobs are content-addressed). The
command app's body limit (``app.BODY_LIMITS``) refuses a photo over the size before it is read;
the check here holds the route to it wherever it is served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meridian.domain.errors import Unavailable
from meridian.domain.model import Identifier
from meridian.ports import BlobStore
from services.command.handlers import Deps
from services.command.handlers.pod import MAX_IMAGE_BYTES, SIGNATURES, attach_pod_image
from services.command.routes.common import AuthenticatedRoute, Caller, accepted, declared


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
    routes = APIRouter(tags=["parcels"], route_class=AuthenticatedRoute)

    @routes.put(
        "/v1/parcels/{parcel_id}/pod-image",
        status_code=202,
        responses=declared(404, 409, 415, location="/v1/parcels/{parcel_id}"),
    )
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
        return accepted(answer, f"/v1/parcels/{parcel_id}")

    return routes
