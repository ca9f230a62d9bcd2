"""``services.sync.conflicts.NEEDS`` (what a parcel in each status holds for the event that
announces the move) against the event publisher itself: a document with exactly what ``NEEDS``
names for its status makes its event, and one lacking any of it is a ``DecodeError``, the poison
change the bridge must never write (an Eventarc retry for 24 h)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meridian.domain.errors import DecodeError
from meridian.domain.states import ParcelStatus
from services.event_publisher.handlers import DocumentChange, event_for_change
from services.sync.conflicts import NEEDS, cannot_express

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NEEDED = sorted({f for fields in NEEDS.values() for f in fields})


def _absent(field: str) -> Any:
    """A field's value when the parcel lacks it: None, or no attempt for a count (the
    monolith's attempts column is never null)."""
    return 0 if field == "attempts" else None


FULL: dict[str, Any] = {
    "parcel_id": "p-1",
    "shipment_id": "s-1",
    "client_id": "c-1",
    "recipient": {"name": "Ravi", "phone": "+919800000001", "email": None},
    "stop": {
        "location": {"lat": 12.97, "lng": 77.6},
        "address": "1 MG Road",
        "window": {"start": T0, "end": T0 + timedelta(hours=3)},
    },
    "weight_kg": 1.25,
    "attempts": 1,
    "failure_reason": None,
    "window_id": "w-1",
    "route_id": "r-1",
    "driver_id": "d-1",
    "vehicle_id": "v-1",
    "delivered_at": T0,
    "delivered_position": {"lat": 12.97, "lng": 77.6},
}


def _moved_to(status: ParcelStatus, **document: Any) -> DocumentChange:
    before = "DELIVERY_FAILED" if status is ParcelStatus.CREATED else "CREATED"
    new = {**document, "status": status.value}
    return DocumentChange("parcels/p-1", {**new, "status": before}, new, T0)


@pytest.mark.parametrize("status", list(ParcelStatus), ids=str)
def test_a_parcel_with_what_its_status_needs_makes_its_event(status: ParcelStatus) -> None:
    only_needed = {**FULL, **{f: _absent(f) for f in NEEDED if f not in NEEDS.get(status, ())}}
    assert cannot_express({**only_needed, "status": status.value}) == []
    event = event_for_change(_moved_to(status, **only_needed))
    assert event is not None and getattr(event, "parcel_id", None) == "p-1"


@pytest.mark.parametrize(
    ("status", "field"), [(s, f) for s, fields in NEEDS.items() for f in fields], ids=str
)
def test_a_parcel_lacking_what_its_status_needs_is_poison(status: ParcelStatus, field: str) -> None:
    lacking = {**FULL, field: _absent(field)}
    assert cannot_express({**lacking, "status": status.value}) == [field]
    with pytest.raises(DecodeError):
        event_for_change(_moved_to(status, **lacking))
