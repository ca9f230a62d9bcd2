"""How domain entities are stored as documents, shared by the services that write and read them.

A parcel document is the parcel's fields plus ``updated_at`` and ``_last_command`` (who asked for
the change that produced this version), which the event publisher uses to build events.

A vehicle's assignment, ``vehicle_assignments/{vehicle_id}``, names the driver on it now: written
in the transaction of every change that puts a driver on a vehicle (the desk's ``:assign``, the
driver's ``:out-for-delivery``, the dispatch saga's confirmed route), and read by the command
service's telemetry to refuse a driver's pings for a vehicle that is not theirs, one document per
vehicle (a query over parcels scanned every parcel in flight, and wanted a composite index).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meridian.domain.actors import Actor
from meridian.domain.model import Parcel, Shipment
from meridian.ports import Document

_PARCEL_FIELDS = frozenset(Parcel.model_fields)
VEHICLE_ASSIGNMENTS = "vehicle_assignments"


def parcel_document(parcel: Parcel, now: datetime, command: str, actor: Actor) -> dict[str, Any]:
    return {
        **parcel.model_dump(mode="python"),
        "updated_at": now,
        "_last_command": {"name": command, "by": actor.subject, "role": actor.role, "at": now},
    }


def parcel_from_document(data: Mapping[str, Any]) -> Parcel:
    return Parcel.model_validate({k: v for k, v in data.items() if k in _PARCEL_FIELDS})


def shipment_document(shipment: Shipment, now: datetime) -> dict[str, Any]:
    return {**shipment.model_dump(mode="python"), "status": "OPEN", "updated_at": now}


def vehicle_assignment_path(vehicle_id: str) -> str:
    return f"{VEHICLE_ASSIGNMENTS}/{vehicle_id}"


def vehicle_assignment_document(
    vehicle_id: str, driver_id: str, now: datetime, command: str, actor: Actor
) -> dict[str, Any]:
    """``driver_id`` drives ``vehicle_id`` since ``now``, put there by ``command`` of ``actor``."""
    return {
        "vehicle_id": vehicle_id,
        "driver_id": driver_id,
        "since": now,
        "assigned_by": {"name": command, "by": actor.subject, "role": actor.role},
    }


def assigned_driver(document: Document | None) -> str | None:
    """The driver a vehicle's assignment names, None for a vehicle nobody was put on."""
    return None if document is None else document.data.get("driver_id")
