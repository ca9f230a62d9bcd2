"""The domain model: frozen, typed, validated on construction.

Entities change by returning a new instance (``parcel.deliver(...)``), so a handler's before and
after are both plain values it can compare and store.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from meridian.domain.states import ParcelMove, ParcelStatus, next_status


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (RFC 3339, e.g. 2026-11-21T09:30:00Z)")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
Identifier = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]


class Value(BaseModel):
    """Base of every domain value: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class GeoPoint(Value):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class TimeWindow(Value):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("window end must be after its start")
        return self

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


class Recipient(Value):
    name: str = Field(min_length=1, max_length=200)
    phone: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164, e.g. +919812345678")
    email: str | None = Field(default=None, max_length=254)


class Stop(Value):
    """Where and when a parcel must arrive."""

    location: GeoPoint
    address: str = Field(min_length=1, max_length=500)
    window: TimeWindow


class ProofOfDelivery(Value):
    signature_ref: str | None = Field(default=None, max_length=1024)
    photo_ref: str | None = Field(default=None, max_length=1024)
    received_by: str | None = Field(default=None, max_length=200)


class Parcel(Value):
    parcel_id: Identifier
    shipment_id: Identifier
    client_id: Identifier
    recipient: Recipient
    stop: Stop
    weight_kg: float = Field(gt=0, le=1000)
    status: ParcelStatus = ParcelStatus.CREATED
    window_id: str | None = None
    route_id: str | None = None
    driver_id: str | None = None
    vehicle_id: str | None = None
    stop_sequence: int | None = Field(default=None, ge=0)  # its place on the route, as planned
    attempts: int = Field(default=0, ge=0)
    failure_reason: str | None = None
    delivered_at: datetime | None = None
    delivered_position: GeoPoint | None = None
    pod: ProofOfDelivery | None = None

    def _move(self, move: ParcelMove, **changes: object) -> Parcel:
        status = next_status(self.status, move, self.parcel_id)
        return self.model_copy(update={"status": status, **changes})

    def plan(self, window_id: str) -> Parcel:
        return self._move(ParcelMove.PLAN, window_id=window_id)

    def assign(
        self, route_id: str, driver_id: str, vehicle_id: str, stop_sequence: int | None = None
    ) -> Parcel:
        return self._move(
            ParcelMove.ASSIGN,
            route_id=route_id,
            driver_id=driver_id,
            vehicle_id=vehicle_id,
            stop_sequence=stop_sequence,
        )

    def send_out(self) -> Parcel:
        return self._move(ParcelMove.SEND_OUT, attempts=self.attempts + 1)

    def deliver(
        self, delivered_at: datetime, position: GeoPoint, pod: ProofOfDelivery | None = None
    ) -> Parcel:
        return self._move(
            ParcelMove.DELIVER, delivered_at=delivered_at, delivered_position=position, pod=pod
        )

    def fail(self, reason: str) -> Parcel:
        return self._move(ParcelMove.FAIL, failure_reason=reason)

    def requeue(self) -> Parcel:
        """Back to CREATED for the next window; the route, driver and vehicle are released."""
        return self._move(
            ParcelMove.REQUEUE,
            window_id=None,
            route_id=None,
            driver_id=None,
            vehicle_id=None,
            stop_sequence=None,
        )

    def return_to_sender(self) -> Parcel:
        return self._move(ParcelMove.RETURN)


class Shipment(Value):
    shipment_id: Identifier
    client_id: Identifier
    parcel_ids: tuple[Identifier, ...] = Field(min_length=1)
    created_at: AwareDatetime
    closed_at: datetime | None = None


class VehicleStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    RESERVED = "RESERVED"
    ON_ROUTE = "ON_ROUTE"
    OUT_OF_SERVICE = "OUT_OF_SERVICE"


class Vehicle(Value):
    vehicle_id: Identifier
    capacity_kg: float = Field(gt=0)
    capacity_parcels: int = Field(gt=0)
    depot: GeoPoint
    status: VehicleStatus = VehicleStatus.AVAILABLE


class DriverStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    RESERVED = "RESERVED"
    ON_ROUTE = "ON_ROUTE"
    OFF_DUTY = "OFF_DUTY"


class Driver(Value):
    driver_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    phone: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$")
    status: DriverStatus = DriverStatus.AVAILABLE


class RouteStatus(StrEnum):
    PLANNED = "PLANNED"
    OFFERED = "OFFERED"
    CONFIRMED = "CONFIRMED"
    RELEASED = "RELEASED"


class RouteStop(Value):
    sequence: int = Field(ge=0)
    parcel_id: Identifier
    location: GeoPoint
    window: TimeWindow
    eta: datetime | None = None


class Route(Value):
    route_id: Identifier
    window_id: Identifier
    vehicle_id: Identifier
    driver_id: Identifier | None = None
    stops: tuple[RouteStop, ...] = ()
    status: RouteStatus = RouteStatus.PLANNED

    @model_validator(mode="after")
    def _sequenced(self) -> Self:
        if [s.sequence for s in self.stops] != list(range(len(self.stops))):
            raise ValueError("route stops must be numbered 0, 1, 2, … in order")
        return self


class DispatchWindowStatus(StrEnum):
    OPEN = "OPEN"
    PLANNING = "PLANNING"
    DISPATCHED = "DISPATCHED"
    FAILED = "FAILED"


class DispatchWindow(Value):
    window_id: Identifier
    depot: GeoPoint
    window: TimeWindow
    opened_by: Identifier
    status: DispatchWindowStatus = DispatchWindowStatus.OPEN
    execution_id: str | None = None
    schedule_id: Identifier | None = None  # the schedule that opened it; None: by hand


class WebhookEndpoint(Value):
    endpoint_id: Identifier
    url: str = Field(pattern=r"^https?://", max_length=2048)
    event_types: tuple[str, ...] = Field(min_length=1)
    enabled: bool = True


class ClientIntegration(Value):
    """A client system: its API key (stored hashed) and its webhook endpoints."""

    client_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    api_key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    webhooks: tuple[WebhookEndpoint, ...] = ()
