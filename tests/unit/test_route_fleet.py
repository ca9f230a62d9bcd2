"""RouteFleet (meridian/runtime/sim.py): vehicles drive their planned stops in order, report each
arrival once, then drive back to the depot and park there."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian.runtime.sim import RouteFleet, SimOptions, SimRoute, distance_m, offset

DEPOT = (12.9716, 77.5946)


def test_each_vehicle_reaches_its_stops_in_order_then_parks_at_the_depot() -> None:
    stops = (offset(*DEPOT, 200, 0), offset(*DEPOT, 200, 100))
    other = (offset(*DEPOT, -150, 0),)
    fleet = RouteFleet(
        SimOptions(ping_interval_s=0.5, seed=3),
        routes=[SimRoute("veh-a", DEPOT, stops, 50.0), SimRoute("veh-b", DEPOT, other, 50.0)],
        dwell_s=0.5,
    )
    now = datetime.now(UTC)
    last: dict[str, dict[str, float]] = {}
    for tick in range(1, 61):  # 30 s of simulation, a tick every half second
        for ping in fleet.advance(tick * 0.5, now):
            last[ping["vehicle_id"]] = ping["position"]
            assert ping["speed_mps"] <= 70  # what the geofence job accepts
    assert fleet.arrivals == [("veh-b", 0), ("veh-a", 0), ("veh-a", 1)]
    for position in last.values():  # back home, within the GPS noise
        assert distance_m((position["lat"], position["lng"]), DEPOT) < 30
