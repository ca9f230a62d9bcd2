"""The RouteOptimizer adapters: OR-Tools respects capacity and delivery windows and names what it
cannot serve; the Route Optimization API adapter builds the request and reads the response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meridian.embedded.routing import (
    SERVICE_S,
    SPEED_MPS,
    OrToolsRouteOptimizer,
    haversine_m,
    travel_matrix,
)
from meridian.gcp.routing import RouteOptimizationApi, build_request, read_response
from meridian.ports import GeoPoint, RoutingProblem

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def _stop(i: int, opens_h: float = 0, hours: float = 4, weight: float = 1.0) -> dict[str, Any]:
    start = NOW + timedelta(hours=opens_h)
    return {
        "id": f"p{i}",
        "lat": 12.97 + 0.003 * i,
        "lng": 77.59 - 0.002 * i,
        "weight_kg": weight,
        "window_start": start,
        "window_end": start + timedelta(hours=hours),
    }


def _problem(stops: list[dict[str, Any]], vehicles: int = 2, capacity: int = 3) -> RoutingProblem:
    fleet = [
        {"id": f"v{i}", "capacity_kg": 50.0, "capacity_parcels": capacity} for i in range(vehicles)
    ]
    return RoutingProblem(GeoPoint(lat=12.97, lng=77.59), stops, fleet, NOW)


def test_capacity_and_windows_are_respected() -> None:
    stops = [_stop(i, opens_h=2 if i % 2 else 0, hours=1) for i in range(6)]
    solution = OrToolsRouteOptimizer().solve(_problem(stops), time_limit_s=0.5)
    assert solution.unserved == []
    assert sorted(s["id"] for r in solution.routes for s in r["stops"]) == sorted(
        s["id"] for s in stops
    )
    by_id = {s["id"]: s for s in stops}
    for route in solution.routes:
        assert len(route["stops"]) <= 3
        assert [s["sequence"] for s in route["stops"]] == list(range(len(route["stops"])))
        for stop in route["stops"]:
            assert (
                by_id[stop["id"]]["window_start"] <= stop["eta"] <= by_id[stop["id"]]["window_end"]
            )
    assert solution.cost > 0


def test_unservable_parcels_are_listed_with_a_reason() -> None:
    stops = [
        _stop(0),
        {
            **_stop(1),
            "window_start": NOW - timedelta(hours=3),
            "window_end": NOW - timedelta(hours=1),
        },
        _stop(2, weight=80.0),
        *[_stop(i) for i in range(3, 8)],  # more than one vehicle of 3 can carry
    ]
    solution = OrToolsRouteOptimizer().solve(_problem(stops, vehicles=1), time_limit_s=0.5)
    reasons = {u["id"]: u["reason"] for u in solution.unserved}
    assert "closed before" in reasons["p1"]
    assert "more than any vehicle carries" in reasons["p2"]
    assert len(reasons) == 2 + 3  # and three the one vehicle has no room for
    assert sum(len(r["stops"]) for r in solution.routes) == 3


def test_thetravel_matrix_is_the_great_circle_time_plus_service_at_the_origin() -> None:
    points = [
        GeoPoint(lat=12.97, lng=77.59),
        *(GeoPoint(lat=s["lat"], lng=s["lng"]) for s in map(_stop, range(9))),
    ]

    matrix = travel_matrix(points)

    for a, origin in enumerate(points):
        for b, destination in enumerate(points):
            expected = int(haversine_m(origin, destination) / SPEED_MPS) + (SERVICE_S if a else 0)
            assert matrix[a][b] == (0 if a == b else expected)


def test_no_vehicle_means_every_parcel_unserved() -> None:
    solution = OrToolsRouteOptimizer().solve(_problem([_stop(0)], vehicles=0), time_limit_s=0.1)
    assert solution.routes == [] and [u["id"] for u in solution.unserved] == ["p0"]


def test_route_optimization_api_request_and_response() -> None:
    from google.maps import routeoptimization_v1 as ro

    problem = _problem([_stop(0), _stop(1)], vehicles=1)
    request = build_request(problem, "proj", time_limit_s=5, geodesic=True)
    assert request.parent == "projects/proj" and request.timeout.seconds == 5
    assert request.model.shipments[1].load_demands["parcels"].amount == 1
    assert request.model.vehicles[0].load_limits["weight_g"].max_load == 50_000

    class FakeClient:
        def optimize_tours(self, request: Any, timeout: float) -> Any:
            visit = ro.ShipmentRoute.Visit(shipment_index=1, start_time=NOW + timedelta(minutes=10))
            return ro.OptimizeToursResponse(
                routes=[
                    ro.ShipmentRoute(
                        vehicle_index=0,
                        visits=[visit],
                        vehicle_start_time=NOW,
                        vehicle_end_time=NOW + timedelta(minutes=30),
                    )
                ],
                skipped_shipments=[
                    ro.SkippedShipment(
                        index=0,
                        reasons=[
                            ro.SkippedShipment.Reason(
                                code=ro.SkippedShipment.Reason.Code.CANNOT_BE_PERFORMED_WITHIN_VEHICLE_TIME_WINDOWS
                            )
                        ],
                    )
                ],
                metrics=ro.OptimizeToursResponse.Metrics(total_cost=42.0),
            )

    solution = RouteOptimizationApi("proj", client=FakeClient()).solve(problem, 5)
    assert solution.routes[0]["stops"] == [
        {"id": "p1", "sequence": 0, "eta": NOW + timedelta(minutes=10)}
    ]
    assert solution.routes[0]["duration_s"] == 1800
    assert solution.unserved == [
        {"id": "p0", "reason": "CANNOT_BE_PERFORMED_WITHIN_VEHICLE_TIME_WINDOWS"}
    ]
    assert solution.cost == 42.0
    assert read_response(ro.OptimizeToursResponse(), [], [])[0] == []
