"""Fleet routes of the command service, for the dispatch desk: ``/v1/drivers``, ``/v1/vehicles``
and ``/v1/geofences``, each with POST (201, ``Location``), GET one, GET a page, PATCH (a JSON
merge of the fields sent) and DELETE (204); POST and PATCH take an ``Idempotency-Key``. Use cases
in ``handlers/fleet.py``; dispatchers only.

The three resources are one table (``_RESOURCES``) and one function that adds a resource's
routes. This module does not
postpone its annotations (no ``from __future__ import annotations``): FastAPI reads a route's body
model from its annotation, and here that model is that function's argument, which only an
annotation evaluated when the route is defined can name.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from meridian.domain.model import AwareDatetime, GeoPoint, Identifier
from services.command.handlers import Deps
from services.command.handlers import fleet as handlers
from services.command.routes.common import (
    AuthenticatedRoute,
    Caller,
    IdempotencyKey,
    declared,
    request_key,
)

Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["06:00"])]
# GeoJSON positions are [lng, lat]; their ranges, ring closure, validity and size are the
# handler's checks (``check_fence_geometry``), which name every problem at once.
Ring = list[tuple[float, float]]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Shift(Body):
    """When the vehicle works, in the depot's local time; an end before the start runs past
    midnight."""

    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _not_empty(self) -> "Shift":
        if self.start == self.end:
            raise ValueError("a shift ends at another time than it starts")
        return self


class DriverChange(Body):
    name: Name | None = None
    phone: Phone | None = None
    status: Literal["AVAILABLE", "OFF_DUTY"] | None = None


class NewDriver(Body):
    driver_id: Identifier = Field(description="the subject of the driver's token")
    name: Name
    phone: Phone
    status: Literal["AVAILABLE", "OFF_DUTY"] = "AVAILABLE"


class VehicleChange(Body):
    capacity_kg: float | None = Field(default=None, gt=0, le=50_000)
    capacity_parcels: int | None = Field(default=None, gt=0, le=10_000)
    depot: GeoPoint | None = None
    shift: Shift | None = None
    status: Literal["AVAILABLE", "OUT_OF_SERVICE"] | None = None


class NewVehicle(Body):
    vehicle_id: Identifier
    capacity_kg: float = Field(gt=0, le=50_000)
    capacity_parcels: int = Field(gt=0, le=10_000)
    depot: GeoPoint
    shift: Shift | None = None
    status: Literal["AVAILABLE", "OUT_OF_SERVICE"] = "AVAILABLE"


class Polygon(Body):
    type: Literal["Polygon"]
    coordinates: list[Ring] = Field(min_length=1, description="the exterior ring, then holes")


class MultiPolygon(Body):
    type: Literal["MultiPolygon"]
    coordinates: list[list[Ring]] = Field(min_length=1)


Geometry = Annotated[Polygon | MultiPolygon, Field(discriminator="type")]


class GeofenceChange(Body):
    name: Name | None = None
    geometry: Geometry | None = None
    margin_m: float | None = Field(
        default=None, ge=0, le=1_000, description="hysteresis: crossing means this far past"
    )
    active: bool | None = None
    active_from: AwareDatetime | None = None


class NewGeofence(Body):
    fence_id: Identifier
    name: Name
    geometry: Geometry
    margin_m: float | None = Field(
        default=None, ge=0, le=1_000, description="default: the geofence job's (15 m)"
    )
    active: bool = True
    active_from: AwareDatetime | None = Field(default=None, description="applies from then on")


class Held(BaseModel):
    """What the saga writes on a driver or vehicle it holds."""

    status: str
    window_id: str | None = None
    route_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Driver(Held):
    driver_id: str
    name: str
    phone: str


class Vehicle(Held):
    vehicle_id: str
    capacity_kg: float
    capacity_parcels: int
    depot: GeoPoint
    shift: Shift | None = None


class Geofence(BaseModel):
    fence_id: str
    name: str | None = None
    geometry: dict[str, Any]
    margin_m: float | None = None
    active: bool = True
    active_from: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Drivers(BaseModel):
    drivers: list[Driver]
    next_after: str | None = Field(description="pass as ?after= for the next page; null: done")


class Vehicles(BaseModel):
    vehicles: list[Vehicle]
    next_after: str | None = Field(description="pass as ?after= for the next page; null: done")


class Geofences(BaseModel):
    geofences: list[Geofence]
    next_after: str | None = Field(description="pass as ?after= for the next page; null: done")


@dataclass(frozen=True)
class Resource:
    kind: handlers.Kind
    prefix: str
    new: type[Body]  # POST's body
    changed: type[Body]  # PATCH's body
    one: type[BaseModel]  # the answer of POST, GET one and PATCH
    page: type[BaseModel]  # the answer of GET a page

    @property
    def plural(self) -> str:
        return self.prefix.rsplit("/", 1)[-1]


_RESOURCES = (
    Resource(handlers.DRIVER, "/v1/drivers", NewDriver, DriverChange, Driver, Drivers),
    Resource(handlers.VEHICLE, "/v1/vehicles", NewVehicle, VehicleChange, Vehicle, Vehicles),
    Resource(handlers.GEOFENCE, "/v1/geofences", NewGeofence, GeofenceChange, Geofence, Geofences),
)


def router() -> APIRouter:
    routes = APIRouter(tags=["fleet"], route_class=AuthenticatedRoute)
    for resource in _RESOURCES:
        _add_routes(routes, resource)
    return routes


def _add_routes(routes: APIRouter, resource: Resource) -> None:
    kind, prefix, plural = resource.kind, resource.prefix, resource.plural
    new, changed = resource.new, resource.changed
    item = f"{prefix}/{{item_id}}"
    created = {
        "headers": {
            "Location": {
                "description": f"the {kind.name} registered, {item}",
                "required": True,
                "schema": {"type": "string"},
            }
        }
    }

    @routes.post(
        prefix,
        status_code=201,
        response_model=resource.one,
        responses={**declared(409), 201: created},
        summary=f"Register a {kind.name}",
        operation_id=f"register_{kind.name}",
    )
    async def register(
        body: new,  # type: ignore[valid-type]
        request: Request,
        response: Response,
        caller: Caller,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        fields = body.model_dump(mode="json", exclude_none=True)  # type: ignore[attr-defined]
        item_id = fields.pop(kind.id_field)
        key = await request_key(request, caller, idempotency_key)
        answer = await run_in_threadpool(
            handlers.register, kind, item_id, fields, caller, deps, key
        )
        response.headers["Location"] = f"{prefix}/{item_id}"
        return answer

    @routes.get(
        prefix,
        response_model=resource.page,
        responses=declared(),
        summary=f"List {plural}, a page at a time",
        operation_id=f"list_{plural}",
    )
    async def list_page(
        request: Request,
        caller: Caller,
        after: Annotated[
            Identifier | None, Query(description="the last id of the page before")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=handlers.MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        items, next_after = await run_in_threadpool(handlers.page, kind, after, limit, caller, deps)
        return {plural: items, "next_after": next_after}

    @routes.get(
        item,
        response_model=resource.one,
        responses=declared(404),
        summary=f"Read a {kind.name}",
        operation_id=f"read_{kind.name}",
    )
    async def read(item_id: Identifier, request: Request, caller: Caller) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(handlers.read, kind, item_id, caller, deps)

    @routes.patch(
        item,
        response_model=resource.one,
        responses=declared(404, 409),
        summary=f"Change a {kind.name}'s fields (those sent)",
        operation_id=f"change_{kind.name}",
    )
    async def change(
        item_id: Identifier,
        body: changed,  # type: ignore[valid-type]
        request: Request,
        caller: Caller,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        fields = body.model_dump(mode="json", exclude_unset=True)  # type: ignore[attr-defined]
        key = await request_key(request, caller, idempotency_key)
        return await run_in_threadpool(handlers.change, kind, item_id, fields, caller, deps, key)

    @routes.delete(
        item,
        status_code=204,
        responses=declared(404, 409),
        summary=f"Remove a {kind.name}",
        operation_id=f"remove_{kind.name}",
    )
    async def remove(item_id: Identifier, request: Request, caller: Caller) -> Response:
        deps: Deps = request.app.state.deps
        await run_in_threadpool(handlers.remove, kind, item_id, caller, deps)
        return Response(status_code=204)
