"""The telemetry route: ``POST /v1/telemetry``, a batch of pings from a driver app or a fleet
gateway (use case in ``handlers/telemetry.py``). A hot route: it reads its own credentials and
body, so the app serves it straight from ASGI (``meridian.edge.fast_routes``), and validates the
body in one pass when every ping is valid (``telemetry_pings``).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field

from meridian.concurrency.offload import InThread, Offload
from meridian.domain.actors import Actor
from meridian.domain.commands import RecordPing
from services.command.handlers import Deps
from services.command.handlers import telemetry as handlers
from services.command.handlers.telemetry import MAX_PINGS_PER_BATCH, AssignedVehicles
from services.command.routes.common import (
    RequestBody,
    accepted,
    authenticate,
    declared,
    documented,
)


class TelemetryRequest(RequestBody):
    """A batch whose every ping is valid, as documented: the common case, validated straight
    from the JSON bytes in one pydantic-core pass (a third of parsing the JSON into dicts and
    validating those)."""

    pings: list[RecordPing] = Field(min_length=1, max_length=MAX_PINGS_PER_BATCH)


class _Batch(RequestBody):
    """What a body must be to be read as a batch at all. Its elements are then judged one by
    one (``handlers.validated_pings``), objects or not, so one bad ping does not sink the
    batch."""

    pings: list[Any] = Field(min_length=1, max_length=MAX_PINGS_PER_BATCH)


def telemetry_pings(body: bytes) -> list[RecordPing | str]:
    """The pings of a ``POST /v1/telemetry`` body, each validated or the reason it is not.

    A body that is not a telemetry batch at all (malformed JSON, no ``pings`` array, too many
    pings) is refused whole, with every problem listed, as FastAPI refuses any other body."""
    try:
        return list(TelemetryRequest.model_validate_json(body).pings)
    except pydantic.ValidationError:
        pass
    try:
        batch = _Batch.model_validate_json(body)
    except pydantic.ValidationError as e:
        errors = e.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None
    return handlers.validated_pings(batch.pings)


def ingest_thread() -> concurrent.futures.Executor:
    """Batches are ingested one at a time: CPU work from several worker threads at once only
    fights over the GIL and the broker's write lock, which cost a third more CPU per batch than
    taking them in turn. Pub/Sub's network publish gets this thread. On the embedded runtime
    the bootstrap has batches ingested on the event loop itself (handing each to a thread and
    back cost another 10% of its CPU), and this thread gets them only while the broker's write
    lock is held elsewhere, in turn, so the loop never waits for it
    (``meridian.adapters.offload``, ``concurrency.offload.AtOnce``)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="telemetry")


def router(deps: Deps, ingest: Offload | None = None) -> APIRouter:
    """``ingest``: where a batch is recorded and published (by default, ``ingest_thread``).
    It may shed a batch (``Overloaded``: 503 with ``Retry-After``, nothing published)."""
    routes = APIRouter()
    offload = ingest if ingest is not None else InThread(ingest_thread())
    # Which vehicle each driver drives, kept for this app's batches (one read a batch at most).
    assigned = AssignedVehicles(deps.store)

    def record_pings(body: bytes, caller: Actor) -> dict[str, Any]:
        caller.require(*handlers.REPORTERS)  # who may, before what they sent
        return handlers.record_pings(telemetry_pings(body), caller, deps, assigned)

    @routes.post(
        "/v1/telemetry",
        status_code=202,
        tags=["telemetry"],
        responses=declared(),  # a batch has no status resource: its 202 names none
        openapi_extra=documented(TelemetryRequest, idempotent=False),
    )
    async def telemetry(request: Request) -> JSONResponse:
        caller = await authenticate(request)
        body = await request.body()
        return accepted(await offload.run(record_pings, body, caller))

    return routes
