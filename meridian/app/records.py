"""How domain entities are stored as documents, shared by the services that write and read them.

A parcel document is the parcel's fields plus ``updated_at`` and ``_last_command`` (who asked for
the change that produced this version), which the event publisher uses to build events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meridian.domain.actors import Actor
from meridian.domain.model import Parcel, Shipment

_PARCEL_FIELDS = frozenset(Parcel.model_fields)


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
