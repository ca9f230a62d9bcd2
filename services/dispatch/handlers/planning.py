"""Planning a window: reserve what it needs, solve its routes once, and turn the solution into
routes, each proposed to one held driver."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from meridian.app import dispatch_records as rec
from meridian.app.records import parcel_document, parcel_from_document
from meridian.domain.dispatch import AssignRoutes, OptimizeRoutes, ReserveWindow
from meridian.domain.errors import AlreadyExists, Conflict, NotFound
from meridian.domain.model import DispatchWindowStatus, DriverStatus, ParcelStatus, VehicleStatus
from meridian.ports import Document, GeoPoint, Query, RoutingProblem, Transaction
from services.dispatch.handlers import CHUNK, SAGA, Answer, Deps
from services.dispatch.handlers.holdings import (
    chunks,
    free,
    held,
    planned,
    progress,
    requeue_parcels,
    window,
)


def reserve(command: ReserveWindow, deps: Deps) -> Answer:
    """Plan the CREATED parcels whose promised window overlaps this one into it, and hold every
    available driver and vehicle for it (``assign`` releases those the routes do not use)."""
    window_id = command.window_id
    dispatch_window = window(deps.store, window_id)
    starts, ends = dispatch_window["window"]["start"], dispatch_window["window"]["end"]
    now = deps.clock()
    candidates = [
        d.id
        for d in deps.store.query(
            Query(rec.PARCELS).where("status", "==", ParcelStatus.CREATED.value)
        )
        if d.data["stop"]["window"]["end"] > starts and d.data["stop"]["window"]["start"] < ends
    ]
    for chunk in chunks(candidates):

        def plan(tx: Transaction, chunk: Sequence[str] = chunk) -> None:
            docs = [(pid, tx.get(f"{rec.PARCELS}/{pid}")) for pid in chunk]  # reads before writes
            for parcel_id, doc in docs:
                if doc is None or doc.data["status"] != ParcelStatus.CREATED.value:
                    continue  # taken by another window meanwhile
                parcel = parcel_from_document(doc.data).plan(window_id)
                tx.set(
                    f"{rec.PARCELS}/{parcel_id}", parcel_document(parcel, now, "PlanParcel", SAGA)
                )

        deps.store.run_transaction(plan)
    counts = {}
    for collection, status, reserved in (
        (rec.DRIVERS, DriverStatus.AVAILABLE.value, DriverStatus.RESERVED.value),
        (rec.VEHICLES, VehicleStatus.AVAILABLE.value, VehicleStatus.RESERVED.value),
    ):
        available = [
            d.id for d in deps.store.query(Query(collection).where("status", "==", status))
        ]

        def hold(
            tx: Transaction,
            collection: str = collection,
            available: list[str] = available,
            status: str = status,
            reserved: str = reserved,
        ) -> None:
            docs = [(item, tx.get(f"{collection}/{item}")) for item in available]
            for item, doc in docs:
                if doc is not None and doc.data["status"] == status:
                    tx.update(f"{collection}/{item}", {"status": reserved, "window_id": window_id})

        deps.store.run_transaction(hold)
        counts[collection] = len(held(deps.store, collection, window_id))
    parcels = planned(deps.store, window_id)
    deps.store.update(
        rec.window_path(window_id),
        {"status": DispatchWindowStatus.PLANNING.value, "updated_at": now},
    )
    result = {"window_id": window_id, "parcels": len(parcels), **counts}
    progress(
        deps, window_id, stage="RESERVED", **{k: v for k, v in result.items() if k != "window_id"}
    )
    return result, []


def optimize(command: OptimizeRoutes, deps: Deps) -> Answer:
    """Solve the window's routes once and keep the solution; a retry reads it back."""
    window_id, time_limit = command.window_id, command.time_limit_s
    existing = deps.store.get(rec.solution_path(window_id))
    if existing is None:
        dispatch_window = window(deps.store, window_id)
        parcels = planned(deps.store, window_id)
        drivers = held(deps.store, rec.DRIVERS, window_id)
        vehicles = sorted(
            held(deps.store, rec.VEHICLES, window_id),
            key=lambda v: (-v["capacity_kg"], v["vehicle_id"]),
        )[: len(drivers)]  # a vehicle without a driver goes nowhere
        problem = RoutingProblem(
            depot=GeoPoint(
                lat=dispatch_window["depot"]["lat"], lng=dispatch_window["depot"]["lng"]
            ),
            stops=[
                {
                    "id": p["parcel_id"],
                    "lat": p["stop"]["location"]["lat"],
                    "lng": p["stop"]["location"]["lng"],
                    "weight_kg": p["weight_kg"],
                    "window_start": p["stop"]["window"]["start"],
                    "window_end": p["stop"]["window"]["end"],
                }
                for p in sorted(parcels, key=lambda p: str(p["parcel_id"]))
            ],
            vehicles=[
                {
                    "id": v["vehicle_id"],
                    "capacity_kg": v["capacity_kg"],
                    "capacity_parcels": v["capacity_parcels"],
                }
                for v in vehicles
            ],
            starts_at=max(dispatch_window["window"]["start"], deps.clock()),
        )
        solution = deps.optimizer.solve(problem, time_limit)
        document = {
            "routes": [dict(r) for r in solution.routes],
            "unserved": [dict(u) for u in solution.unserved],
            "cost": solution.cost,
            "solve_seconds": solution.solve_seconds,
            "time_limit_s": time_limit,
        }
        with contextlib.suppress(AlreadyExists):  # a concurrent retry stored one first: use it
            deps.store.create(rec.solution_path(window_id), document)
        existing = deps.store.get(rec.solution_path(window_id))
        assert existing is not None
    data = existing.data
    result = {
        "window_id": window_id,
        "routes": len(data["routes"]),
        "served": sum(len(r["stops"]) for r in data["routes"]),
        "unserved": len(data["unserved"]),
        "cost": data["cost"],
        "solve_seconds": data["solve_seconds"],
        "time_limit_s": data["time_limit_s"],
    }
    progress(
        deps, window_id, stage="OPTIMIZED", **{k: v for k, v in result.items() if k != "window_id"}
    )
    return result, []


def assign(command: AssignRoutes, deps: Deps) -> Answer:
    """Turn the solution into routes, each proposed to one held driver; give back what no route
    uses, and re-queue the parcels the optimizer could not serve."""
    window_id = command.window_id
    solution = deps.store.get(rec.solution_path(window_id))
    if solution is None:
        raise NotFound(f"window {window_id} has no solution yet; run optimize first")
    now = deps.clock()
    drivers = sorted(d["driver_id"] for d in held(deps.store, rec.DRIVERS, window_id))
    routes = list(solution.data["routes"])
    if len(routes) > len(drivers):
        raise Conflict(f"{len(routes)} routes but only {len(drivers)} drivers held")
    proposed = [
        {"route_id": rec.route_id(window_id, n), "driver_id": driver, "vehicle_id": p["vehicle_id"]}
        for n, (p, driver) in enumerate(zip(routes, drivers, strict=False), start=1)
    ]
    plans = list(zip(proposed, routes, strict=False))
    per_transaction = CHUNK // 3  # a route, its driver and its vehicle
    for first in range(0, len(plans), per_transaction):

        def create(
            tx: Transaction, chunk: list[Any] = plans[first : first + per_transaction]
        ) -> None:
            # every read before the first write, as Firestore transactions require
            missing = [(r, p) for r, p in chunk if tx.get(f"{rec.ROUTES}/{r['route_id']}") is None]
            parcels = {
                stop["id"]: tx.get(f"{rec.PARCELS}/{stop['id']}")
                for _, plan in missing
                for stop in plan["stops"]
            }
            for route, plan in missing:
                tx.create(
                    f"{rec.ROUTES}/{route['route_id']}",
                    _route_document(window_id, route, plan, parcels, now),
                )
                tx.update(f"{rec.DRIVERS}/{route['driver_id']}", {"route_id": route["route_id"]})
                tx.update(f"{rec.VEHICLES}/{plan['vehicle_id']}", {"route_id": route["route_id"]})

        deps.store.run_transaction(create)
    used_vehicles = {r["vehicle_id"] for r in proposed}
    free(deps, rec.DRIVERS, drivers[len(proposed) :], window_id, None)
    spare = [
        v["vehicle_id"]
        for v in held(deps.store, rec.VEHICLES, window_id)
        if v["vehicle_id"] not in used_vehicles
    ]
    free(deps, rec.VEHICLES, spare, window_id, None)
    unserved = solution.data["unserved"]
    by_reason: dict[str, list[str]] = {}
    for item in unserved:
        by_reason.setdefault(item["reason"], []).append(item["id"])
    for reason, ids in by_reason.items():
        requeue_parcels(deps, window_id, ids, f"not routed: {reason}")
    progress(deps, window_id, stage="ASSIGNED", routes=len(proposed), unserved=len(unserved))
    return {
        "window_id": window_id,
        "routes": proposed,
        "route_ids": [r["route_id"] for r in proposed],
        "requeued": len(unserved),
    }, []


def _route_document(
    window_id: str,
    route: Mapping[str, Any],
    plan: Mapping[str, Any],
    parcels: Mapping[str, Document | None],
    now: datetime,
) -> dict[str, Any]:
    stops = []
    for stop in plan["stops"]:
        parcel = parcels[stop["id"]]
        assert parcel is not None
        stops.append(
            {
                "sequence": stop["sequence"],
                "parcel_id": stop["id"],
                "location": parcel.data["stop"]["location"],
                "window": parcel.data["stop"]["window"],
                "eta": stop["eta"],
            }
        )
    return {
        "route_id": route["route_id"],
        "window_id": window_id,
        "vehicle_id": plan["vehicle_id"],
        "driver_id": route["driver_id"],
        "stops": stops,
        "parcel_ids": [s["id"] for s in plan["stops"]],
        "status": "PLANNED",
        "offers": 0,
        "declined_by": [],
        "created_at": now,
    }
