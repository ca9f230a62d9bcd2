"""Commands: what a caller asks the platform to do, named in the imperative.

A command is validated on construction; a handler takes one command and the ports it needs.
"""

from __future__ import annotations

from pydantic import Field

from meridian.domain.model import (
    AwareDatetime,
    GeoPoint,
    Identifier,
    ProofOfDelivery,
    Recipient,
    Stop,
    TimeWindow,
    Value,
)


class Command(Value):
    """Base of every command."""


class NewParcel(Value):
    parcel_id: Identifier | None = None
    recipient: Recipient
    stop: Stop
    weight_kg: float = Field(gt=0, le=1000)


class CreateShipment(Command):
    client_id: Identifier
    shipment_id: Identifier | None = None
    parcels: tuple[NewParcel, ...] = Field(min_length=1, max_length=500)


class SendOutForDelivery(Command):
    parcel_id: Identifier
    driver_id: Identifier
    vehicle_id: Identifier
    at: AwareDatetime


class DeliverParcel(Command):
    parcel_id: Identifier
    driver_id: Identifier
    vehicle_id: Identifier
    delivered_at: AwareDatetime
    position: GeoPoint
    pod: ProofOfDelivery | None = None


class FailDelivery(Command):
    parcel_id: Identifier
    driver_id: Identifier
    vehicle_id: Identifier
    failed_at: AwareDatetime
    reason: str = Field(min_length=1, max_length=500)


class AssignParcel(Command):
    """Manual dispatch from the desk: plan a parcel into a window and put it on a route."""

    parcel_id: Identifier
    route_id: Identifier
    driver_id: Identifier
    vehicle_id: Identifier
    window_id: Identifier = "manual"
    stop_sequence: int | None = Field(default=None, ge=0, le=10_000)


class RequeueParcel(Command):
    parcel_id: Identifier
    reason: str = Field(min_length=1, max_length=500)


class ReturnParcel(Command):
    parcel_id: Identifier
    reason: str = Field(min_length=1, max_length=500)


class RecordPing(Command):
    """One GPS ping from a driver app; it goes to the telemetry topic, never the document store."""

    vehicle_id: Identifier
    driver_id: Identifier | None = None
    position: GeoPoint
    recorded_at: AwareDatetime
    heading_deg: float | None = Field(default=None, ge=0, lt=360)
    speed_mps: float | None = Field(default=None, ge=0, le=90)
    accuracy_m: float | None = Field(default=None, ge=0, le=10_000)


class OpenDispatchWindow(Command):
    window_id: Identifier | None = None
    depot: GeoPoint
    window: TimeWindow
    opened_by: Identifier


class AcceptAssignment(Command):
    assignment_id: Identifier
    driver_id: Identifier


class DeclineAssignment(Command):
    assignment_id: Identifier
    driver_id: Identifier
    reason: str | None = Field(default=None, max_length=500)


class RegisterWebhook(Command):
    client_id: Identifier
    url: str = Field(pattern=r"^https?://", max_length=2048)
    event_types: tuple[str, ...] = Field(min_length=1)
