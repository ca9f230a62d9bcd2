"""The command service: accept fast, write once, answer 202.

Entrypoint only: it parses HTTP, authenticates, calls a handler and maps errors to problem
details. Everything that happens after the commit happens elsewhere, off this path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from meridian.concurrency.group_commit import Committer
from meridian.domain.actors import Actor
from meridian.domain.commands import (
    AssignParcel,
    CreateShipment,
    DeliverParcel,
    FailDelivery,
    NewParcel,
    RecordPing,
    RequeueParcel,
    ReturnParcel,
    SendOutForDelivery,
)
from meridian.domain.model import GeoPoint, Identifier, ProofOfDelivery
from meridian.edge.fast_routes import PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.observability import TraceContext, spans_exported
from meridian.ports import BlobStore, IdentityVerifier, WorkflowExecutions
from services.command import dispatch, handlers, pod, webhooks
from services.command.handlers import MAX_PINGS_PER_BATCH, Deps
from services.command.web import (
    Caller,
    IdempotencyKey,
    accepted,
    authenticate,
    document_credentials,
    documented,
    idempotency_key,
    parcel_move,
    request_key,
)


class _Body(BaseModel):
    # Strip like the domain's values do, so "reason": "\r" is refused here, at the body, with
    # the field named, instead of when the command is built from an already accepted body.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ShipmentRequest(_Body):
    shipment_id: Identifier | None = None
    parcels: list[NewParcel] = Field(min_length=1, max_length=500)


class DeliverRequest(_Body):
    driver_id: Identifier | None = Field(default=None, description="defaults to the token's driver")
    vehicle_id: Identifier
    delivered_at: datetime
    position: GeoPoint
    pod: ProofOfDelivery | None = None


class OutForDeliveryRequest(_Body):
    driver_id: Identifier | None = None
    vehicle_id: Identifier
    at: datetime


class FailRequest(_Body):
    driver_id: Identifier | None = None
    vehicle_id: Identifier
    failed_at: datetime
    reason: str = Field(min_length=1, max_length=500)


class AssignRequest(_Body):
    route_id: Identifier
    driver_id: Identifier
    vehicle_id: Identifier
    window_id: Identifier = "manual"
    stop_sequence: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="The parcel's place on the route (0 = first stop), as the desk planned it; "
        "ETAs follow the route in this order.",
    )


class ReasonRequest(_Body):
    reason: str = Field(min_length=1, max_length=500)


class TelemetryRequest(_Body):
    # Pings are validated one by one (``handlers.validated_pings``), so one bad ping does not
    # sink the batch.
    pings: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_PINGS_PER_BATCH)


class _ValidTelemetry(_Body):
    """A telemetry body whose every ping is valid: the common case, validated straight from the
    JSON bytes in one pydantic-core pass (a third of parsing the JSON into dicts and validating
    those)."""

    pings: list[RecordPing] = Field(min_length=1, max_length=MAX_PINGS_PER_BATCH)


def telemetry_pings(body: bytes) -> list[RecordPing | str]:
    """The pings of a ``POST /v1/telemetry`` body, each validated or the reason it is not.

    A body that is not a telemetry request at all (malformed JSON, no ``pings`` list, too many
    pings) is refused whole, with every problem listed, as FastAPI refuses any other body."""
    try:
        return list(_ValidTelemetry.model_validate_json(body).pings)
    except pydantic.ValidationError:
        pass
    try:
        request = TelemetryRequest.model_validate_json(body)
    except pydantic.ValidationError as e:
        errors = e.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None
    return handlers.validated_pings(request.pings)


class Accepted(BaseModel):
    parcel_id: str
    status: str
    accepted_at: str


def create_app(
    deps: Deps,
    verifier: IdentityVerifier,
    workflows: WorkflowExecutions | None = None,
    blobs: Callable[[], BlobStore] | None = None,
) -> FastAPI:
    app = PlainRoutes(
        title="Meridian command service",
        version="1",
        description="Accept-fast commands: validate, one idempotent transactional write, 202.",
        # One request span per request, and only while spans are exported (``TraceContext``
        # carries the trace otherwise); spans around each dependency and serialisation step
        # would cost the accept-fast path more than the work they describe. Logs are JSON lines
        # (observability.py) and no OpenTelemetry meter or logger provider is configured, so
        # FastAPI need not look them up on every request.
        telemetry={
            "operation_spans": False,
            "logs": False,
            "metrics": False,
            "exclude": lambda _: not spans_exported(),
        },
    )
    app.add_middleware(TraceContext)
    install_problem_handlers(app)
    document_credentials(app)
    app.state.deps = deps
    app.state.verifier = verifier
    app.state.workflows = workflows
    app.state.blobs = blobs  # a provider: built on the first POD upload

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/shipments", status_code=202, tags=["shipments"])
    async def create_shipment(
        body: ShipmentRequest,
        request: Request,
        caller: Caller,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        cmd = CreateShipment(
            client_id=caller.subject, shipment_id=body.shipment_id, parcels=tuple(body.parcels)
        )
        key = await request_key(request, caller, idempotency_key)
        return accepted(await run_in_threadpool(handlers.create_shipment, cmd, caller, deps, key))

    @app.get("/v1/shipments/{shipment_id}", tags=["shipments"])
    async def get_shipment(shipment_id: str, caller: Caller) -> dict[str, Any]:
        return await run_in_threadpool(handlers.get_shipment, shipment_id, caller, deps)

    @app.get("/v1/parcels/{parcel_id}", tags=["parcels"])
    async def get_parcel(parcel_id: str, caller: Caller) -> dict[str, Any]:
        return await run_in_threadpool(handlers.get_parcel_status, parcel_id, caller, deps)

    committer = Committer(deps.store)
    app.state.committer = committer

    async def run(
        handler: Callable[..., handlers.Move], cmd: Any, request: Request, caller: Actor
    ) -> JSONResponse:
        key = await request_key(request, caller, idempotency_key(request))
        # On the embedded store the move runs on the event loop, grouped with the moves that
        # arrived with it into one commit (``commit.py``); on Firestore, in a worker thread.
        return accepted(await committer.run(handler(cmd, caller, deps, key)))

    # The parcel moves are the hot path: each reads its parcel id, credentials, body and
    # Idempotency-Key itself (``web.py``, "Hot routes"); ``documented`` describes them in the
    # OpenAPI document.
    def move(body: type[BaseModel]) -> dict[str, Any]:
        extra = documented(body, path=("parcel_id",))
        return {"response_model": Accepted, "status_code": 202, "openapi_extra": extra}

    @app.post("/v1/parcels/{parcel_id}:deliver", tags=["parcels"], **move(DeliverRequest))
    async def deliver(request: Request) -> JSONResponse:
        parcel_id, caller, body = await parcel_move(request, DeliverRequest)
        cmd = DeliverParcel(
            parcel_id=parcel_id,
            driver_id=body.driver_id or caller.subject,
            vehicle_id=body.vehicle_id,
            delivered_at=body.delivered_at,
            position=body.position,
            pod=body.pod,
        )
        return await run(handlers.deliver_parcel, cmd, request, caller)

    @app.post(
        "/v1/parcels/{parcel_id}:out-for-delivery", tags=["parcels"], **move(OutForDeliveryRequest)
    )
    async def out_for_delivery(request: Request) -> JSONResponse:
        parcel_id, caller, body = await parcel_move(request, OutForDeliveryRequest)
        cmd = SendOutForDelivery(
            parcel_id=parcel_id,
            driver_id=body.driver_id or caller.subject,
            vehicle_id=body.vehicle_id,
            at=body.at,
        )
        return await run(handlers.send_out_for_delivery, cmd, request, caller)

    @app.post("/v1/parcels/{parcel_id}:fail", tags=["parcels"], **move(FailRequest))
    async def fail(request: Request) -> JSONResponse:
        parcel_id, caller, body = await parcel_move(request, FailRequest)
        cmd = FailDelivery(
            parcel_id=parcel_id,
            driver_id=body.driver_id or caller.subject,
            vehicle_id=body.vehicle_id,
            failed_at=body.failed_at,
            reason=body.reason,
        )
        return await run(handlers.fail_delivery, cmd, request, caller)

    @app.post("/v1/parcels/{parcel_id}:assign", tags=["dispatch"], **move(AssignRequest))
    async def assign(request: Request) -> JSONResponse:
        parcel_id, caller, body = await parcel_move(request, AssignRequest)
        cmd = AssignParcel(parcel_id=parcel_id, **body.model_dump())
        return await run(handlers.assign_parcel, cmd, request, caller)

    @app.post("/v1/parcels/{parcel_id}:requeue", tags=["dispatch"], **move(ReasonRequest))
    async def requeue(request: Request) -> JSONResponse:
        parcel_id, caller, body = await parcel_move(request, ReasonRequest)
        cmd = RequeueParcel(parcel_id=parcel_id, reason=body.reason)
        return await run(handlers.requeue_parcel, cmd, request, caller)

    @app.post("/v1/parcels/{parcel_id}:return", tags=["dispatch"], **move(ReasonRequest))
    async def return_to_sender(request: Request) -> JSONResponse:
        parcel_id, caller, body = await parcel_move(request, ReasonRequest)
        cmd = ReturnParcel(parcel_id=parcel_id, reason=body.reason)
        return await run(handlers.return_parcel, cmd, request, caller)

    # Telemetry reads its body itself too, and validates it in one pass when every ping is valid
    # (``telemetry_pings``). Batches are ingested one at a time: CPU work from several worker
    # threads at once only fights over the GIL and the broker's write lock, which cost a third
    # more CPU per batch than taking them in turn. A local publish (the embedded broker) runs on
    # the event loop itself, as the embedded store's group commits do: handing each batch to a
    # thread and back cost another 10% of its CPU. Pub/Sub's network publish gets the thread.
    ingest = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="telemetry")

    @app.post(
        "/v1/telemetry",
        status_code=202,
        tags=["telemetry"],
        openapi_extra=documented(TelemetryRequest, idempotent=False),
    )
    async def telemetry(request: Request) -> JSONResponse:
        caller = await authenticate(request)
        body = await request.body()
        if deps.publisher.local_publish:
            return accepted(_record_pings(body, caller))
        context = contextvars.copy_context()  # the request's trace, as run_in_threadpool does
        ingested = ingest.submit(context.run, _record_pings, body, caller)
        return accepted(await asyncio.wrap_future(ingested))

    def _record_pings(body: bytes, caller: Actor) -> dict[str, Any]:
        return handlers.record_pings(telemetry_pings(body), caller, deps)

    # The hot routes read their own inputs, so nothing of FastAPI's per-request machinery is left
    # for them to need: served straight from ASGI (``PlainRoutes.serve_directly``).
    app.serve_directly(
        deliver, out_for_delivery, fail, assign, requeue, return_to_sender, telemetry
    )

    # Included after the routes above, which routing then tries first: the parcel moves and
    # telemetry are the hot paths, and every router tried before the match costs each request.
    app.include_router(dispatch.router())
    app.include_router(webhooks.router())
    app.include_router(pod.router())
    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.edge.serve import serve
    from services.command.bootstrap import bootstrap

    settings = Settings.from_env()
    serve(create_app(*bootstrap(settings)), "command", settings.port_of("command"))


if __name__ == "__main__":
    main()
