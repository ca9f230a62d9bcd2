"""The dispatch desk's fleet use cases (#22 item 1) on fakes: dispatchers only, the documents the
dispatch saga and the geofence job read, idempotent writes, a held driver or vehicle left to the
saga, and geofence polygons checked with every problem named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meridian.app.idempotency import RequestKey
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.actors import Actor
from meridian.domain.errors import (
    AlreadyExists,
    Conflict,
    IdempotencyMismatch,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from meridian.ports import Query
from pipelines.geofence.fences import COLLECTION, fences_from_documents
from services.command.handlers import Deps, fleet
from services.command.handlers.fleet import DRIVER, GEOFENCE, VEHICLE
from tests.fakes import FakeDocumentStore, FakePublisher

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
DESK = Actor("dsp-1", "dispatcher")
# A square of about 1.1 km a side in Bengaluru, [lng, lat] as GeoJSON has it.
SQUARE = [[77.59, 12.97], [77.60, 12.97], [77.60, 12.98], [77.59, 12.98], [77.59, 12.97]]


@pytest.fixture
def deps() -> Deps:
    store = FakeDocumentStore(clock=lambda: NOW)
    return Deps(store, FakePublisher(), EventCodec(load_catalog()), lambda: NOW)


def _key(key: str, body: str) -> RequestKey:
    return RequestKey.of("dispatcher:dsp-1", key, "POST", "/v1/drivers", body.encode())


def _driver(deps: Deps, driver_id: str = "drv-1", **fields: Any) -> dict[str, Any]:
    return fleet.register(
        DRIVER,
        driver_id,
        {"name": "Asha", "phone": "+919800000001", **fields},
        DESK,
        deps,
        None,
    )


def _polygon(ring: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring]}


def test_a_registered_driver_is_the_document_the_saga_reserves(deps: Deps) -> None:
    answer = _driver(deps)
    stored = deps.store.get("drivers/drv-1")
    assert stored is not None
    assert {k: stored.data[k] for k in ("driver_id", "name", "phone", "status")} == {
        "driver_id": "drv-1",
        "name": "Asha",
        "phone": "+919800000001",
        "status": "AVAILABLE",
    }
    # the saga's reservation query finds it
    found = deps.store.query(Query("drivers").where("status", "==", "AVAILABLE"))
    assert [d.id for d in found] == ["drv-1"]
    assert answer["created_at"] == NOW.isoformat()
    assert fleet.read(DRIVER, "drv-1", DESK, deps) == answer


def test_a_registered_vehicle_carries_capacity_depot_and_shift(deps: Deps) -> None:
    fleet.register(
        VEHICLE,
        "veh-1",
        {
            "capacity_kg": 500.0,
            "capacity_parcels": 40,
            "depot": {"lat": 12.97, "lng": 77.59},
            "shift": {"start": "06:00", "end": "14:00"},
        },
        DESK,
        deps,
        None,
    )
    stored = deps.store.get("vehicles/veh-1")
    assert stored is not None
    assert stored.data["vehicle_id"] == "veh-1"
    assert stored.data["status"] == "AVAILABLE"  # what the saga holds
    assert (stored.data["capacity_kg"], stored.data["capacity_parcels"]) == (500.0, 40)
    assert stored.data["depot"] == {"lat": 12.97, "lng": 77.59}
    assert stored.data["shift"] == {"start": "06:00", "end": "14:00"}


@pytest.mark.parametrize("role", ["driver", "client", "gateway"])
def test_only_a_dispatcher_may(deps: Deps, role: str) -> None:
    someone = Actor("x-1", role)  # type: ignore[arg-type]
    _driver(deps)
    for attempt in (
        lambda: fleet.register(
            DRIVER, "drv-3", {"name": "N", "phone": "+919800000001"}, someone, deps, None
        ),
        lambda: fleet.read(DRIVER, "drv-1", someone, deps),
        lambda: fleet.page(DRIVER, None, 10, someone, deps),
        lambda: fleet.change(DRIVER, "drv-1", {"name": "N"}, someone, deps, None),
        lambda: fleet.remove(DRIVER, "drv-1", someone, deps),
    ):
        with pytest.raises(PermissionDenied):
            attempt()
    assert deps.store.get("drivers/drv-3") is None
    assert deps.store.get("drivers/drv-1") is not None


def test_registering_twice_is_a_conflict_unless_it_is_the_same_request(deps: Deps) -> None:
    first = fleet.register(
        DRIVER, "drv-1", {"name": "A", "phone": "+919800000001"}, DESK, deps, _key("k1", "a")
    )
    again = fleet.register(
        DRIVER, "drv-1", {"name": "A", "phone": "+919800000001"}, DESK, deps, _key("k1", "a")
    )
    assert again == first
    with pytest.raises(AlreadyExists):
        _driver(deps)
    with pytest.raises(IdempotencyMismatch):
        fleet.register(
            DRIVER, "drv-1", {"name": "B", "phone": "+919800000001"}, DESK, deps, _key("k1", "b")
        )


def test_a_change_merges_the_fields_sent(deps: Deps) -> None:
    _driver(deps)
    changed = fleet.change(DRIVER, "drv-1", {"status": "OFF_DUTY"}, DESK, deps, None)
    assert (changed["name"], changed["status"]) == ("Asha", "OFF_DUTY")
    stored = deps.store.get("drivers/drv-1")
    assert stored is not None and stored.data["status"] == "OFF_DUTY"
    with pytest.raises(NotFound):
        fleet.change(DRIVER, "drv-9", {"name": "N"}, DESK, deps, None)
    with pytest.raises(ValidationError, match="name: may not be null"):
        fleet.change(DRIVER, "drv-1", {"name": None}, DESK, deps, None)


def test_the_saga_statuses_are_not_the_desks_to_set(deps: Deps) -> None:
    with pytest.raises(ValidationError, match="status"):
        _driver(deps, status="ON_ROUTE")
    _driver(deps)
    with pytest.raises(ValidationError, match="status"):
        fleet.change(DRIVER, "drv-1", {"status": "RESERVED"}, DESK, deps, None)


def test_a_driver_or_vehicle_a_window_holds_stays_with_the_saga(deps: Deps) -> None:
    _driver(deps)
    deps.store.update("drivers/drv-1", {"status": "RESERVED", "window_id": "w-1"})
    with pytest.raises(Conflict, match="w-1"):
        fleet.change(DRIVER, "drv-1", {"status": "OFF_DUTY"}, DESK, deps, None)
    with pytest.raises(Conflict, match="w-1"):
        fleet.remove(DRIVER, "drv-1", DESK, deps)
    renamed = fleet.change(DRIVER, "drv-1", {"name": "Asha K"}, DESK, deps, None)
    assert (renamed["name"], renamed["status"], renamed["window_id"]) == (
        "Asha K",
        "RESERVED",
        "w-1",
    )
    # given back by the saga: the desk's again
    deps.store.update("drivers/drv-1", {"status": "AVAILABLE", "window_id": None})
    fleet.remove(DRIVER, "drv-1", DESK, deps)
    assert deps.store.get("drivers/drv-1") is None
    with pytest.raises(NotFound):
        fleet.remove(DRIVER, "drv-1", DESK, deps)


def test_pages_go_in_id_order_and_say_where_to_go_on(deps: Deps) -> None:
    for n in (3, 1, 4, 0, 2):
        _driver(deps, f"drv-{n}")
    first, after = fleet.page(DRIVER, None, 2, DESK, deps)
    assert [d["driver_id"] for d in first] == ["drv-0", "drv-1"] and after == "drv-1"
    second, after = fleet.page(DRIVER, after, 2, DESK, deps)
    assert [d["driver_id"] for d in second] == ["drv-2", "drv-3"] and after == "drv-3"
    last, after = fleet.page(DRIVER, after, 2, DESK, deps)
    assert [d["driver_id"] for d in last] == ["drv-4"] and after is None


def test_a_geofence_is_the_document_the_geofence_job_loads(deps: Deps) -> None:
    active_from = (NOW + timedelta(hours=1)).isoformat()
    answer = fleet.register(
        GEOFENCE,
        "depot-a",
        {
            "name": "Depot A",
            "geometry": _polygon(SQUARE),
            "margin_m": 20.0,
            "active_from": active_from,
        },
        DESK,
        deps,
        None,
    )
    assert answer["geometry"] == _polygon(SQUARE)
    assert fleet.GEOFENCES == COLLECTION
    stored = deps.store.query(Query(COLLECTION))
    assert isinstance(stored[0].data["geometry"], str)  # Firestore has no nested arrays
    fences, problems = fences_from_documents(((d.id, d.data) for d in stored), 15.0)
    assert problems == []
    [fence] = fences
    assert (fence.fence_id, fence.margin_m) == ("depot-a", 20.0)
    assert fence.active_from == (NOW + timedelta(hours=1)).timestamp()
    assert fence.geometry.bounds == pytest.approx((77.59, 12.97, 77.60, 12.98))
    # a change to its shape is what the job reads at its next refresh
    moved = [[lng + 0.01, lat] for lng, lat in SQUARE]
    fleet.change(GEOFENCE, "depot-a", {"geometry": _polygon(moved)}, DESK, deps, None)
    stored = deps.store.query(Query(COLLECTION))
    [fence], _ = fences_from_documents(((d.id, d.data) for d in stored), 15.0)
    assert fence.geometry.bounds == pytest.approx((77.60, 12.97, 77.61, 12.98))
    # switched off: the job skips it
    fleet.change(GEOFENCE, "depot-a", {"active": False}, DESK, deps, None)
    stored = deps.store.query(Query(COLLECTION))
    assert fences_from_documents(((d.id, d.data) for d in stored), 15.0) == ([], [])


def test_a_fence_without_a_margin_takes_the_jobs_default(deps: Deps) -> None:
    fleet.register(GEOFENCE, "f", {"name": "F", "geometry": _polygon(SQUARE)}, DESK, deps, None)
    stored = deps.store.query(Query(COLLECTION))
    [fence], _ = fences_from_documents(((d.id, d.data) for d in stored), 15.0)
    assert fence.margin_m == 15.0


def _problems(geometry: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as refused:
        fleet.check_fence_geometry(geometry)
    return [str(e) for e in refused.value.errors]


def test_a_ring_must_be_closed() -> None:
    assert _problems(_polygon(SQUARE[:-1])) == [
        "geometry.coordinates.0: a ring is closed: its last position is its first"
    ]


def test_a_ring_has_at_least_four_positions() -> None:
    assert _problems(_polygon([[77.59, 12.97], [77.60, 12.97], [77.59, 12.97]])) == [
        "geometry.coordinates.0: a ring needs at least four positions"
    ]


def test_a_self_intersecting_ring_is_refused_saying_where() -> None:
    bowtie = [[77.59, 12.97], [77.60, 12.98], [77.60, 12.97], [77.59, 12.98], [77.59, 12.97]]
    [problem] = _problems(_polygon(bowtie))
    assert problem.startswith("geometry: not a valid polygon: Self-intersection[77.595 12.975")


def test_positions_are_lng_lat_in_range() -> None:
    swapped = [[lat, lng] for lng, lat in SQUARE]  # fine: Bengaluru swapped is in range
    fleet.check_fence_geometry(_polygon(swapped))
    out = [[200.0, 12.97], [77.60, 12.97], [77.60, 95.0], [77.59, 12.98], [200.0, 12.97]]
    assert _problems(_polygon(out)) == [
        "geometry.coordinates.0.0: a position is [lng, lat] within ±180, ±90",
        "geometry.coordinates.0.2: a position is [lng, lat] within ±180, ±90",
        "geometry.coordinates.0.4: a position is [lng, lat] within ±180, ±90",
    ]


def test_a_fence_has_a_bounded_size() -> None:
    n = fleet.MAX_FENCE_VERTICES
    ring = [[77.59 + 0.01 * (i / n), 12.97 + 0.001 * (i % 2)] for i in range(n)]
    many = _polygon([*ring, [77.60, 12.98], ring[0]])
    assert _problems(many) == [f"geometry: {n + 2} positions; a fence has at most {n}"]
    country = [[70.0, 10.0], [80.0, 10.0], [80.0, 20.0], [70.0, 20.0], [70.0, 10.0]]
    [problem] = _problems(_polygon(country))
    assert "km²; a fence covers more than nothing and at most 5,000 km²" in problem
    flat = [[77.59, 12.97], [77.60, 12.97], [77.61, 12.97], [77.59, 12.97]]
    [problem] = _problems(_polygon(flat))
    assert problem.startswith("geometry: ")


def test_only_polygons_are_fences() -> None:
    assert _problems({"type": "LineString", "coordinates": SQUARE}) == [
        "geometry.type: a fence is a Polygon or a MultiPolygon, not LineString"
    ]


def test_a_multipolygon_names_the_polygon_at_fault() -> None:
    good = [SQUARE]
    bad = [[[lng + 0.1, lat] for lng, lat in SQUARE[:-1]]]
    assert _problems({"type": "MultiPolygon", "coordinates": [good, bad]}) == [
        "geometry.coordinates.1.0: a ring is closed: its last position is its first"
    ]
    fleet.check_fence_geometry({"type": "MultiPolygon", "coordinates": [good]})


def test_the_stored_geometry_is_compact_geojson(deps: Deps) -> None:
    fleet.register(GEOFENCE, "f", {"name": "F", "geometry": _polygon(SQUARE)}, DESK, deps, None)
    stored = deps.store.get(f"{COLLECTION}/f")
    assert stored is not None
    assert json.loads(stored.data["geometry"]) == _polygon(SQUARE)
    assert " " not in stored.data["geometry"]
