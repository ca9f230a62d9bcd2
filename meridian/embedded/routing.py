"""The embedded RouteOptimizer: a capacitated VRP with time windows solved by OR-Tools.

Travel times are great-circle distances at a fixed urban speed (the embedded runtime has no road
network); every stop is optional with a large drop penalty, so an over-full window still yields
routes, and the stops left out are listed with the reason they could not be served.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from meridian.domain.errors import Unavailable, ValidationError
from meridian.ports import GeoPoint, RouteOptimizer, RoutingProblem, RoutingSolution

SPEED_MPS = 25_000 / 3600  # 25 km/h: city traffic, door to door
SERVICE_S = 120  # time at each stop
GRAMS_PER_KG = 1000
# Dropping a stop must always cost more than any detour that could serve it.
DROP_PENALTY = 10_000_000


def haversine_m(a: GeoPoint, b: GeoPoint) -> float:
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat, dlng = lat2 - lat1, math.radians(b.lng - a.lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


def travel_matrix(points: Sequence[GeoPoint]) -> list[list[int]]:
    """Seconds from node a to node b plus the service time at a (the depot, node 0, has none).

    ``haversine_m`` over every pair, with each point's radians and cosine worked out once and
    each distance computed for one direction only: for 500 stops this took close to a second
    before the solver's time limit even started."""
    lats = [math.radians(p.lat) for p in points]
    lngs = [math.radians(p.lng) for p in points]
    cosines = [math.cos(lat) for lat in lats]
    count = len(points)
    seconds = [[0] * count for _ in range(count)]
    for a in range(count):
        lat_a, lng_a, cos_a, row = lats[a], lngs[a], cosines[a], seconds[a]
        for b in range(a + 1, count):
            h = (
                math.sin((lats[b] - lat_a) / 2) ** 2
                + cos_a * cosines[b] * math.sin((lngs[b] - lng_a) / 2) ** 2
            )
            row[b] = seconds[b][a] = int(2 * 6_371_000 * math.asin(math.sqrt(h)) / SPEED_MPS)
    for a in range(1, count):
        row = seconds[a]
        for b in range(count):
            if b != a:
                row[b] += SERVICE_S
    return seconds


def _seconds(moment: datetime, origin: datetime) -> int:
    return int((moment - origin).total_seconds())


class OrToolsRouteOptimizer(RouteOptimizer):
    """Solves in-process. Stops are maps with ``id``, ``lat``, ``lng``, ``weight_kg``,
    ``window_start`` and ``window_end`` (aware datetimes); vehicles have ``id``, ``capacity_kg``
    and ``capacity_parcels``. Routes come back with each stop's sequence and ETA."""

    def __init__(self) -> None:
        # OR-Tools is a large native library only this optimizer needs: imported when one is
        # built (in the dispatch service's bootstrap), not by importing this module, and not
        # in the first solve, whose time limit it would overrun by the import's fraction of a
        # second.
        from ortools.constraint_solver import pywrapcp, routing_enums_pb2  # noqa: F401

    def solve(self, problem: RoutingProblem, time_limit_s: float) -> RoutingSolution:
        if time_limit_s <= 0:
            raise ValidationError("time_limit_s must be positive")
        started = time.monotonic()
        stops, vehicles = list(problem.stops), list(problem.vehicles)
        unserved = [
            {"id": s["id"], "reason": why} for s in stops if (why := self._hopeless(s, problem))
        ]
        hopeless = {u["id"] for u in unserved}
        servable = [s for s in stops if s["id"] not in hopeless]
        if not servable or not vehicles:
            reason = "no vehicle available in the window"
            unserved += [{"id": s["id"], "reason": reason} for s in servable]
            return RoutingSolution([], unserved, 0.0, time.monotonic() - started)
        routes, dropped, cost = self._solve(problem, servable, vehicles, time_limit_s)
        unserved += [
            {"id": s["id"], "reason": "no vehicle capacity or time left in the window"}
            for s in dropped
        ]
        return RoutingSolution(routes, unserved, cost, time.monotonic() - started)

    @staticmethod
    def _hopeless(stop: Mapping[str, Any], problem: RoutingProblem) -> str | None:
        """Why a stop cannot be served by any vehicle whatever the others do, if it cannot."""
        start, end = problem.starts_at, problem.starts_at + timedelta(days=1)
        if stop["window_end"] <= start:
            return "its delivery window closed before the dispatch window opened"
        if stop["window_start"] >= end:
            return "its delivery window opens after the planning horizon"
        heaviest = max((float(v["capacity_kg"]) for v in problem.vehicles), default=0.0)
        if float(stop["weight_kg"]) > heaviest:
            return f"{stop['weight_kg']} kg is more than any vehicle carries"
        drive = haversine_m(problem.depot, GeoPoint(lat=stop["lat"], lng=stop["lng"])) / SPEED_MPS
        if start + timedelta(seconds=drive) > stop["window_end"]:
            return "too far from the depot to reach inside its delivery window"
        return None

    def _solve(
        self,
        problem: RoutingProblem,
        stops: Sequence[Mapping[str, Any]],
        vehicles: Sequence[Mapping[str, Any]],
        time_limit_s: float,
    ) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]], float]:
        from ortools.constraint_solver import pywrapcp, routing_enums_pb2

        origin = problem.starts_at
        points = [problem.depot, *(GeoPoint(lat=s["lat"], lng=s["lng"]) for s in stops)]
        count = len(points)
        # travel from node a to node b, plus the service time at a (the depot has none)
        travel = travel_matrix(points)
        horizon = max(_seconds(s["window_end"], origin) for s in stops) + SERVICE_S
        manager = pywrapcp.RoutingIndexManager(count, len(vehicles), 0)
        routing = pywrapcp.RoutingModel(manager)

        def transit(i: int, j: int) -> int:
            return travel[manager.IndexToNode(i)][manager.IndexToNode(j)]

        # Matrices and vectors, not Python callbacks: the search evaluates arcs millions of times
        # and a callback into Python for each one took most of the time limit.
        transit_index = routing.RegisterTransitMatrix(travel)
        routing.SetArcCostEvaluatorOfAllVehicles(transit_index)
        routing.AddDimension(transit_index, horizon, horizon, False, "time")
        clock = routing.GetDimensionOrDie("time")
        weights = [0, *(int(float(s["weight_kg"]) * GRAMS_PER_KG) for s in stops)]
        weight_index = routing.RegisterUnaryTransitVector(weights)
        routing.AddDimensionWithVehicleCapacity(
            weight_index,
            0,
            [int(float(v["capacity_kg"]) * GRAMS_PER_KG) for v in vehicles],
            True,
            "weight",
        )
        parcels_index = routing.RegisterUnaryTransitVector([0, *(1 for _ in stops)])
        routing.AddDimensionWithVehicleCapacity(
            parcels_index, 0, [int(v["capacity_parcels"]) for v in vehicles], True, "parcels"
        )
        for node, stop in enumerate(stops, start=1):
            index = manager.NodeToIndex(node)
            opens = max(0, _seconds(stop["window_start"], origin))
            closes = min(horizon, _seconds(stop["window_end"], origin))
            clock.CumulVar(index).SetRange(opens, max(opens, closes))
            routing.AddDisjunction([index], DROP_PENALTY)
        for v in range(len(vehicles)):
            clock.CumulVar(routing.Start(v)).SetRange(0, horizon)
        params = pywrapcp.DefaultRoutingSearchParameters()
        params.first_solution_strategy = (
            routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
        )
        params.local_search_metaheuristic = (
            routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
        )
        params.time_limit.FromMilliseconds(max(1, int(time_limit_s * 1000)))
        solution = routing.SolveWithParameters(params)
        if solution is None:
            raise Unavailable(f"no solution found within {time_limit_s} s")
        routes: list[dict[str, Any]] = []
        served: set[int] = set()
        cost = 0.0
        for v, vehicle in enumerate(vehicles):
            index = solution.Value(routing.NextVar(routing.Start(v)))
            visits: list[dict[str, Any]] = []
            previous = routing.Start(v)
            while not routing.IsEnd(index):
                node = manager.IndexToNode(index)
                served.add(node)
                eta = origin + timedelta(seconds=solution.Min(clock.CumulVar(index)))
                visits.append({"id": stops[node - 1]["id"], "sequence": len(visits), "eta": eta})
                cost += transit(previous, index)
                previous, index = index, solution.Value(routing.NextVar(index))
            if visits:
                cost += transit(previous, index)
                routes.append(
                    {
                        "vehicle_id": vehicle["id"],
                        "stops": visits,
                        "duration_s": solution.Min(clock.CumulVar(index)),
                    }
                )
        dropped = [s for node, s in enumerate(stops, start=1) if node not in served]
        return routes, dropped, cost


class FaultInjectingOptimizer(RouteOptimizer):
    """The embedded stand-in for an external API that can be down: while the file ``down`` exists
    in its fault directory every solve raises Unavailable, as a failing remote optimiser would."""

    def __init__(self, inner: RouteOptimizer, fault_dir: Path) -> None:
        self.inner = inner
        self.fault_dir = fault_dir

    def solve(self, problem: RoutingProblem, time_limit_s: float) -> RoutingSolution:
        if (self.fault_dir / "down").exists():
            raise Unavailable("route optimizer unavailable (fault injected)")
        return self.inner.solve(problem, time_limit_s)


def fault_dir(data_dir: Path) -> Path:
    """Where tests and demos switch the embedded optimiser's faults on and off."""
    return data_dir / "faults" / "route-optimizer"
