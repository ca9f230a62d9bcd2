"""Who may open a customer tracking stream: the token's parcel only, only while it is out for
delivery. Status codes are asserted over HTTP in tests/e2e/test_live_map.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meridian.app.tracking import TrackingTokens
from meridian.domain.errors import Conflict, NotFound, PermissionDenied, Unauthenticated
from meridian.ports import Document
from services.live_map.tracking import (
    TrackingDeps,
    TrackingEnded,
    fence_view,
    open_tracking,
    route_view,
    status_view,
)
from tests.fakes import FakeDocumentStore

SECRET = b"s" * 32
NOW = time.time()
T = datetime(2026, 11, 21, 9, tzinfo=UTC)


def parcel(status: str, vehicle: str | None = "veh-1") -> dict[str, Any]:
    end = datetime(2026, 11, 21, 12, tzinfo=UTC)
    return {
        "parcel_id": "p-1",
        "status": status,
        "vehicle_id": vehicle,
        "stop": {
            "location": {"lat": 12.97, "lng": 77.59},
            "address": "1 MG Road",
            "window": {"start": end - timedelta(hours=2), "end": end},
        },
    }


@pytest.fixture
def deps() -> TrackingDeps:
    store = FakeDocumentStore()
    store.set("parcels/p-1", parcel("OUT_FOR_DELIVERY"))
    store.set("parcels/p-2", parcel("OUT_FOR_DELIVERY", "veh-2"))
    return TrackingDeps(store, TrackingTokens(SECRET, clock=lambda: NOW), clock=lambda: NOW)


def test_the_parcels_own_token_opens_its_stream(deps: TrackingDeps) -> None:
    grant = open_tracking("p-1", deps.tokens.issue("p-1"), deps)
    assert grant.parcel_id == "p-1"


def test_no_token_is_unauthenticated(deps: TrackingDeps) -> None:
    with pytest.raises(Unauthenticated):
        open_tracking("p-1", None, deps)


def test_a_forged_token_is_unauthenticated(deps: TrackingDeps) -> None:
    forged = TrackingTokens(b"x" * 32, clock=lambda: NOW).issue("p-1")
    with pytest.raises(Unauthenticated):
        open_tracking("p-1", forged, deps)


def test_an_expired_token_is_unauthenticated(deps: TrackingDeps) -> None:
    old = TrackingTokens(SECRET, clock=lambda: NOW - 7200).issue("p-1", ttl_s=60)
    with pytest.raises(Unauthenticated, match="expired"):
        open_tracking("p-1", old, deps)


def test_another_parcels_token_is_forbidden(deps: TrackingDeps) -> None:
    with pytest.raises(PermissionDenied):
        open_tracking("p-2", deps.tokens.issue("p-1"), deps)


@pytest.mark.parametrize("status", ["DELIVERED", "DELIVERY_FAILED", "RETURNED"])
def test_an_ended_delivery_is_gone(deps: TrackingDeps, status: str) -> None:
    deps.store.set("parcels/p-1", parcel(status))
    with pytest.raises(TrackingEnded) as ended:
        open_tracking("p-1", deps.tokens.issue("p-1"), deps)
    assert ended.value.status == status


def test_a_parcel_not_yet_out_is_a_conflict(deps: TrackingDeps) -> None:
    deps.store.set("parcels/p-1", parcel("ASSIGNED"))
    with pytest.raises(Conflict):
        open_tracking("p-1", deps.tokens.issue("p-1"), deps)


def test_a_valid_token_for_a_missing_parcel_is_not_found(deps: TrackingDeps) -> None:
    with pytest.raises(NotFound):
        open_tracking("p-9", deps.tokens.issue("p-9"), deps)


def test_the_status_shows_the_projected_eta_and_nothing_private(deps: TrackingDeps) -> None:
    deps.store.set(
        "parcel_status/p-1", {"eta": datetime(2026, 11, 21, 10, tzinfo=UTC), "route_id": "r-1"}
    )
    document = deps.store.get("parcels/p-1")
    assert document is not None
    view = status_view("p-1", document, deps.store.get("parcel_status/p-1"))
    assert view["eta"] == "2026-11-21T10:00:00+00:00"
    assert view["route_id"] == "r-1"
    assert "recipient" not in view and "driver_id" not in view


def test_a_fence_is_shown_as_geojson_and_a_broken_one_without_geometry() -> None:
    polygon = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    fence = Document("geofences/depot", {"name": "Depot", "geometry": json.dumps(polygon)}, T, T)
    assert fence_view(fence) == {
        "fence_id": "depot",
        "name": "Depot",
        "geometry": polygon,
        "radius_m": None,
    }
    broken = Document("geofences/bad", {"geometry": "{not json"}, T, T)
    assert fence_view(broken)["geometry"] is None
    assert fence_view(broken)["name"] == "bad"


def test_a_route_is_shown_in_planned_order_without_recipients() -> None:
    stops = {
        f"p-{i}": {
            "parcel_id": f"p-{i}",
            "client_id": "c-secret",
            "recipient_phone": "+91000",
            "sequence": 2 - i,
            "lat": 12.0 + i,
            "lng": 77.0,
            "status": "pending",
            "eta": T,
        }
        for i in range(3)
    }
    board = Document("route_board/r-1", {"vehicle_id": "veh-1", "stops": stops}, T, T)
    view = route_view(board)
    assert [s["parcel_id"] for s in view["stops"]] == ["p-2", "p-1", "p-0"]
    assert view["stops"][0] == {
        "parcel_id": "p-2",
        "lat": 14.0,
        "lng": 77.0,
        "status": "pending",
        "eta": T.isoformat(),
    }
    assert "c-secret" not in json.dumps(view)
