"""The RouteOptimizer port on Google's Route Optimization API (``google-maps-routeoptimization``).

Stops become delivery shipments with a weight and a parcel-count load, vehicles carry the same two
load limits, and the API's time limit is the request's ``timeout``. Skipped shipments come back
with the API's reason codes, so unservable parcels are named rather than dropped. The API refuses
a whole request whose time windows reach outside the model's global window, so a stop whose
window closed before the start is listed as unserved here and never sent, and a window that
opened before the start is sent from the start.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from meridian.domain.errors import Unavailable, ValidationError
from meridian.ports import RouteOptimizer, RoutingProblem, RoutingSolution

SERVICE_S = 120  # time at each stop, as in the embedded optimizer
SPEED_MPS = 25_000 / 3600  # used only with geodesic distances (no road network)
WINDOW_CLOSED = "its delivery window closed before the dispatch window opened"
NO_VEHICLE = "no vehicle available in the window"


def build_request(
    problem: RoutingProblem, project: str, time_limit_s: float, geodesic: bool
) -> Any:
    from google.maps import routeoptimization_v1 as ro
    from google.protobuf import duration_pb2
    from google.type import latlng_pb2

    def latlng(lat: float, lng: float) -> Any:
        return latlng_pb2.LatLng(latitude=lat, longitude=lng)

    depot = latlng(problem.depot.lat, problem.depot.lng)
    shipments = [
        ro.Shipment(
            label=str(stop["id"]),
            deliveries=[
                ro.Shipment.VisitRequest(
                    arrival_location=latlng(stop["lat"], stop["lng"]),
                    duration=duration_pb2.Duration(seconds=SERVICE_S),
                    time_windows=[
                        ro.TimeWindow(
                            start_time=max(stop["window_start"], problem.starts_at),
                            end_time=stop["window_end"],
                        )
                    ],
                )
            ],
            load_demands={
                "weight_g": ro.Shipment.Load(amount=int(float(stop["weight_kg"]) * 1000)),
                "parcels": ro.Shipment.Load(amount=1),
            },
        )
        for stop in problem.stops
    ]
    vehicles = [
        ro.Vehicle(
            label=str(vehicle["id"]),
            start_location=depot,
            end_location=depot,
            cost_per_traveled_hour=3600.0,  # cost = travel seconds, as in the embedded optimizer
            load_limits={
                "weight_g": ro.Vehicle.LoadLimit(
                    max_load=int(float(vehicle["capacity_kg"]) * 1000)
                ),
                "parcels": ro.Vehicle.LoadLimit(max_load=int(vehicle["capacity_parcels"])),
            },
        )
        for vehicle in problem.vehicles
    ]
    end = max((s["window_end"] for s in problem.stops), default=problem.starts_at) + timedelta(
        hours=1
    )
    return ro.OptimizeToursRequest(
        parent=f"projects/{project}",
        timeout=duration_pb2.Duration(seconds=max(1, int(time_limit_s))),
        model=ro.ShipmentModel(
            shipments=shipments,
            vehicles=vehicles,
            global_start_time=problem.starts_at,
            global_end_time=end,
        ),
        use_geodesic_distances=geodesic,
        geodesic_meters_per_second=SPEED_MPS if geodesic else None,
    )


def read_response(
    response: Any, stops: Sequence[Mapping[str, Any]], vehicles: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    routes = []
    for route in response.routes:
        if not route.visits:
            continue
        visits = [
            {"id": stops[v.shipment_index]["id"], "sequence": n, "eta": _aware(v.start_time)}
            for n, v in enumerate(route.visits)
        ]
        start, end = _aware(route.vehicle_start_time), _aware(route.vehicle_end_time)
        routes.append(
            {
                "vehicle_id": vehicles[route.vehicle_index]["id"],
                "stops": visits,
                "duration_s": int((end - start).total_seconds()),
            }
        )
    unserved = [
        {
            "id": stops[s.index]["id"],
            "reason": ", ".join(r.code.name for r in s.reasons) or "skipped by the optimizer",
        }
        for s in response.skipped_shipments
    ]
    cost = float(response.metrics.total_cost) if "metrics" in response else 0.0
    return routes, unserved, cost


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class RouteOptimizationApi(RouteOptimizer):
    """Calls ``OptimizeTours`` synchronously; API errors surface as Unavailable (retry) or
    ValidationError (the problem itself is wrong)."""

    def __init__(self, project: str, geodesic: bool = False, client: Any = None) -> None:
        self.project = project
        self.geodesic = geodesic
        self._client = client

    def _api(self) -> Any:
        if self._client is None:
            from google.maps import routeoptimization_v1 as ro

            self._client = ro.RouteOptimizationClient()
        return self._client

    def solve(self, problem: RoutingProblem, time_limit_s: float) -> RoutingSolution:
        from google.api_core import exceptions

        if time_limit_s <= 0:
            raise ValidationError("time_limit_s must be positive")
        started = time.monotonic()
        closed = [s for s in problem.stops if s["window_end"] <= problem.starts_at]
        unserved = [{"id": s["id"], "reason": WINDOW_CLOSED} for s in closed]
        stops = [s for s in problem.stops if s["window_end"] > problem.starts_at]
        if not stops or not problem.vehicles:
            unserved += [{"id": s["id"], "reason": NO_VEHICLE} for s in stops]
            return RoutingSolution([], unserved, 0.0, time.monotonic() - started)
        servable = replace(problem, stops=stops)
        request = build_request(servable, self.project, time_limit_s, self.geodesic)
        try:
            # the RPC deadline leaves the solver its whole time limit plus the round trip
            response = self._api().optimize_tours(request=request, timeout=time_limit_s + 30)
        except exceptions.InvalidArgument as e:
            raise ValidationError(f"route optimization refused the problem: {e}") from e
        except exceptions.GoogleAPICallError as e:
            raise Unavailable(f"route optimization API: {e}") from e
        routes, skipped, cost = read_response(response, stops, problem.vehicles)
        return RoutingSolution(routes, unserved + skipped, cost, time.monotonic() - started)
