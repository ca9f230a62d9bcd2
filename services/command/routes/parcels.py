"""Parcel routes: a client's shipments, a parcel's status, and the parcel moves.

The six parcel moves are the hot path, and one table (``MOVES``) defines them: the action in the
path, the body model that both validates the request and documents it in the OpenAPI document
(``common.documented``), the domain command built from it and the handler that runs it. Their
endpoints read their own inputs (``common.parcel_move``), so the app serves them straight from
ASGI (``meridian.edge.fast_routes``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from meridian.app.idempotency import RequestKey
from meridian.concurrency.group_commit import Committer
from meridian.domain.actors import Actor
from meridian.domain.commands import (
    AssignParcel,
    CreateShipment,
    DeliverParcel,
    FailDelivery,
    NewParcel,
    RequeueParcel,
    ReturnParcel,
    SendOutForDelivery,
)
from meridian.domain.model import GeoPoint, Identifier, ProofOfDelivery
from services.command.handlers import Deps
from services.command.handlers import parcels as handlers
from services.command.routes.common import (
    AuthenticatedRoute,
    Caller,
    IdempotencyKey,
    RequestBody,
    accepted,
    declared,
    documented,
    idempotency_key,
    parcel_move,
    request_key,
)


class ShipmentRequest(RequestBody):
    shipment_id: Identifier | None = None
    parcels: list[NewParcel] = Field(min_length=1, max_length=500)


class DeliverRequest(RequestBody):
    driver_id: Identifier | None = Field(default=None, description="defaults to the token's driver")
    vehicle_id: Identifier
    delivered_at: datetime
    position: GeoPoint
    pod: ProofOfDelivery | None = None


class OutForDeliveryRequest(RequestBody):
    driver_id: Identifier | None = None
    vehicle_id: Identifier
    at: datetime


class FailRequest(RequestBody):
    driver_id: Identifier | None = None
    vehicle_id: Identifier
    failed_at: datetime
    reason: str = Field(min_length=1, max_length=500)


class AssignRequest(RequestBody):
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


class ReasonRequest(RequestBody):
    reason: str = Field(min_length=1, max_length=500)


class Accepted(BaseModel):
    parcel_id: str
    status: str
    accepted_at: str


PARCEL_STATUS = "/v1/parcels/{parcel_id}"  # the status resource of a parcel and its moves

B = TypeVar("B", bound=RequestBody)
C = TypeVar("C")


@dataclass(frozen=True)
class ParcelMove(Generic[B, C]):
    """One parcel move: ``POST /v1/parcels/{parcel_id}:{action}``."""

    action: str
    tag: str
    body: type[B]
    command: Callable[[str, Actor, B], C]  # the parcel id, the caller and the body's command
    handle: Callable[[C, Actor, Deps, RequestKey | None], handlers.Move]
    name: str = ""  # of the route (its OpenAPI operation id and summary); by default the action

    @property
    def route_name(self) -> str:
        return self.name or self.action.replace("-", "_")


MOVES: tuple[ParcelMove[Any, Any], ...] = (
    ParcelMove(
        "deliver",
        "parcels",
        DeliverRequest,
        lambda parcel_id, caller, body: DeliverParcel(
            parcel_id=parcel_id,
            driver_id=body.driver_id or caller.subject,
            vehicle_id=body.vehicle_id,
            delivered_at=body.delivered_at,
            position=body.position,
            pod=body.pod,
        ),
        handlers.deliver_parcel,
    ),
    ParcelMove(
        "out-for-delivery",
        "parcels",
        OutForDeliveryRequest,
        lambda parcel_id, caller, body: SendOutForDelivery(
            parcel_id=parcel_id,
            driver_id=body.driver_id or caller.subject,
            vehicle_id=body.vehicle_id,
            at=body.at,
        ),
        handlers.send_out_for_delivery,
    ),
    ParcelMove(
        "fail",
        "parcels",
        FailRequest,
        lambda parcel_id, caller, body: FailDelivery(
            parcel_id=parcel_id,
            driver_id=body.driver_id or caller.subject,
            vehicle_id=body.vehicle_id,
            failed_at=body.failed_at,
            reason=body.reason,
        ),
        handlers.fail_delivery,
    ),
    ParcelMove(
        "assign",
        "dispatch",
        AssignRequest,
        lambda parcel_id, _, body: AssignParcel(parcel_id=parcel_id, **body.model_dump()),
        handlers.assign_parcel,
    ),
    ParcelMove(
        "requeue",
        "dispatch",
        ReasonRequest,
        lambda parcel_id, _, body: RequeueParcel(parcel_id=parcel_id, reason=body.reason),
        handlers.requeue_parcel,
    ),
    ParcelMove(
        "return",
        "dispatch",
        ReasonRequest,
        lambda parcel_id, _, body: ReturnParcel(parcel_id=parcel_id, reason=body.reason),
        handlers.return_parcel,
        name="return_to_sender",
    ),
)


def moves(deps: Deps, committer: Committer) -> APIRouter:
    """The parcel moves of ``MOVES``, each run by ``committer``."""
    routes = APIRouter()
    for move in MOVES:
        routes.add_api_route(
            f"/v1/parcels/{{parcel_id}}:{move.action}",
            _move_endpoint(move, deps, committer),
            methods=["POST"],
            name=move.route_name,
            tags=[move.tag],
            status_code=202,
            response_model=Accepted,
            responses=declared(404, 409, location=PARCEL_STATUS),
            openapi_extra=documented(move.body, path=("parcel_id",)),
        )
    return routes


def _move_endpoint(
    move: ParcelMove[Any, Any], deps: Deps, committer: Committer
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> JSONResponse:
        parcel_id, caller, body = await parcel_move(request, move.body)
        cmd = move.command(parcel_id, caller, body)
        key = await request_key(request, caller, idempotency_key(request))
        # On the embedded store the move runs on the event loop, grouped with the moves that
        # arrived with it into one commit (on the committer's writer thread while the store's
        # lock is held elsewhere; Overloaded, a 503, past its bounds); on Firestore, in a worker
        # thread (``Committer``).
        answer = await committer.run(move.handle(cmd, caller, deps, key))
        return accepted(answer, f"/v1/parcels/{parcel_id}")

    return endpoint


def router(deps: Deps) -> APIRouter:
    """Shipments and parcel status."""
    routes = APIRouter(route_class=AuthenticatedRoute)

    @routes.post(
        "/v1/shipments",
        status_code=202,
        tags=["shipments"],
        responses=declared(409, location="/v1/shipments/{shipment_id}"),
    )
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
        answer = await run_in_threadpool(handlers.create_shipment, cmd, caller, deps, key)
        return accepted(answer, answer["status_url"])

    @routes.get("/v1/shipments/{shipment_id}", tags=["shipments"], responses=declared(404))
    async def get_shipment(shipment_id: str, caller: Caller) -> dict[str, Any]:
        return await run_in_threadpool(handlers.get_shipment, shipment_id, caller, deps)

    @routes.get(PARCEL_STATUS, tags=["parcels"], responses=declared(404))
    async def get_parcel(parcel_id: str, caller: Caller) -> dict[str, Any]:
        return await run_in_threadpool(handlers.get_parcel_status, parcel_id, caller, deps)

    return routes
