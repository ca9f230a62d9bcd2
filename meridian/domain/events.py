"""Domain events: facts the platform has recorded, named in the past tense.

Each class is one event type of ``schemas/catalog.yaml``; its fields are exactly the fields of
``schemas/avro/<EventType>.avsc`` (a test keeps the two in step). Events carry enough state for
their common consumers to act without calling back.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from meridian.domain.model import AwareDatetime, Value

EVENT_TYPES: dict[str, type[DomainEvent]] = {}


def derive_event_id(*parts: str) -> str:
    """A deterministic event id: the same inputs (say a document path and its update time) always
    give the same id, so a redelivered change republishes an event consumers already deduplicate."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"evt-{digest[:32]}"


class DomainEvent(Value):
    event_type: ClassVar[str]

    event_id: str = Field(min_length=1, max_length=128)
    occurred_at: AwareDatetime

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.event_type = cls.__name__
        EVENT_TYPES[cls.__name__] = cls


# Telemetry plane ---------------------------------------------------------------------------------


class VehiclePing(DomainEvent):
    vehicle_id: str
    driver_id: str | None = None
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    heading_deg: float | None = None
    speed_mps: float | None = None
    accuracy_m: float | None = None
    recorded_at: AwareDatetime


class GeofenceDirection(StrEnum):
    ENTER = "ENTER"
    EXIT = "EXIT"


class GeofenceCrossed(DomainEvent):
    vehicle_id: str
    geofence_id: str
    direction: GeofenceDirection
    crossed_at: AwareDatetime
    lat: float
    lng: float
    dwell_seconds: float = Field(ge=0)


class VehicleIdle(DomainEvent):
    vehicle_id: str
    idle_since: AwareDatetime
    lat: float
    lng: float
    radius_m: float = Field(ge=0)
    idle_seconds: float = Field(ge=0)


# Shipments and parcels ---------------------------------------------------------------------------


class ShipmentCreated(DomainEvent):
    shipment_id: str
    client_id: str
    parcel_ids: tuple[str, ...]


class ShipmentClosed(DomainEvent):
    shipment_id: str
    client_id: str
    delivered_count: int = Field(ge=0)
    failed_count: int = Field(ge=0)
    returned_count: int = Field(ge=0)


class ParcelPlanned(DomainEvent):
    parcel_id: str
    shipment_id: str
    client_id: str
    window_id: str


class ParcelAssigned(DomainEvent):
    parcel_id: str
    shipment_id: str
    client_id: str
    window_id: str | None = None
    route_id: str
    driver_id: str
    vehicle_id: str
    stop_sequence: int | None = None  # its place on the route, as planned


class ParcelOutForDelivery(DomainEvent):
    parcel_id: str
    shipment_id: str
    client_id: str
    route_id: str | None = None
    driver_id: str
    vehicle_id: str
    recipient_phone: str
    lat: float
    lng: float
    address: str
    window_start: AwareDatetime
    window_end: AwareDatetime
    attempt: int = Field(ge=1)
    stop_sequence: int | None = None  # its place on the route, as planned


class ParcelDelivered(DomainEvent):
    parcel_id: str
    shipment_id: str
    client_id: str
    route_id: str | None = None
    driver_id: str
    vehicle_id: str
    delivered_at: AwareDatetime
    lat: float
    lng: float
    window_end: AwareDatetime
    recipient_phone: str
    pod_signature_ref: str | None = None
    pod_photo_ref: str | None = None


class DeliveryFailed(DomainEvent):
    parcel_id: str
    shipment_id: str
    client_id: str
    route_id: str | None = None
    driver_id: str
    vehicle_id: str
    failed_at: AwareDatetime
    reason: str
    attempt: int = Field(ge=1)
    recipient_phone: str


class ParcelRequeued(DomainEvent):
    parcel_id: str
    shipment_id: str
    client_id: str
    previous_status: str
    reason: str | None = None


class ParcelReturned(DomainEvent):
    parcel_id: str
    shipment_id: str
    client_id: str
    reason: str | None = None


class PodImageReceived(DomainEvent):
    parcel_id: str
    blob_ref: str
    content_type: str
    size_bytes: int = Field(ge=0)


# ETA and SLA -------------------------------------------------------------------------------------


class StopEta(Value):
    parcel_id: str
    sequence: int = Field(ge=0)
    eta: AwareDatetime
    window_end: AwareDatetime


class RouteEtaUpdated(DomainEvent):
    route_id: str
    vehicle_id: str | None = None
    driver_id: str | None = None
    stops: tuple[StopEta, ...]


class SlaAtRisk(DomainEvent):
    parcel_id: str
    route_id: str | None = None
    client_id: str
    eta: AwareDatetime
    window_end: AwareDatetime
    minutes_late: float


class SlaBreached(DomainEvent):
    parcel_id: str
    route_id: str | None = None
    client_id: str
    window_end: AwareDatetime


# Dispatch ----------------------------------------------------------------------------------------


class DispatchWindowOpened(DomainEvent):
    window_id: str
    opened_by: str
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    execution_id: str | None = None
    # The dispatch schedule that opened the window; None when the desk opened it by hand. The one
    # field in which the two ways of opening a window differ.
    schedule_id: str | None = None


class DriverAssignmentOffered(DomainEvent):
    assignment_id: str
    window_id: str
    route_id: str
    driver_id: str
    vehicle_id: str
    expires_at: AwareDatetime
    offer_number: int = Field(ge=1)


class DriverAssignmentAccepted(DomainEvent):
    assignment_id: str
    window_id: str
    route_id: str
    driver_id: str


class DriverAssignmentDeclined(DomainEvent):
    assignment_id: str
    window_id: str
    route_id: str
    driver_id: str
    reason: str | None = None


class DispatchCompleted(DomainEvent):
    window_id: str
    execution_id: str
    routes_confirmed: tuple[str, ...]
    parcels_requeued: tuple[str, ...]


class DispatchFailed(DomainEvent):
    window_id: str
    execution_id: str
    reason: str
    parcels_requeued: tuple[str, ...]


# Migration bridge (#21, services/sync) ------------------------------------------------------------


class SyncOrigin(StrEnum):
    SCHEDULED = "scheduled"  # the pull, every minute
    ON_DEMAND = "on_demand"  # an operator: POST /v1/sync-requests, meridian sync run


class SyncRequested(DomainEvent):
    """The one shape of the bridge's work, whoever asked (the scheduled pull or an operator):
    rows of ``entity`` after ``(after_updated_at, after_id)`` and up to ``(through_updated_at,
    through_id)`` in keyset order, or exactly ``ids``."""

    request_id: str = Field(min_length=1, max_length=128)
    entity: str
    origin: SyncOrigin
    requester: str
    after_updated_at: AwareDatetime | None = None
    after_id: str | None = None
    through_updated_at: AwareDatetime | None = None
    through_id: str | None = None
    ids: tuple[str, ...] = ()


class SyncStarted(DomainEvent):
    request_id: str
    entity: str
    origin: str
    execution_id: str


class SyncEnded(DomainEvent):
    request_id: str
    entity: str
    execution_id: str
    steps: tuple[str, ...]


class SyncError(DomainEvent):
    request_id: str
    entity: str
    execution_id: str
    step: str
    reason: str


def event_class(event_type: str) -> type[DomainEvent]:
    from meridian.domain.errors import NotFound

    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise NotFound(f"unknown event type {event_type!r}") from None
