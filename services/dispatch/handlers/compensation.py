"""Compensation: give back what a window holds when a route finds no driver or the saga fails.
Release puts routes, drivers and vehicles back; requeue puts parcels back to CREATED for the next
window. Both are idempotent: a retry finds everything given back and answers the same."""

from __future__ import annotations

from meridian.app import dispatch_records as rec
from meridian.domain.dispatch import ReleaseRoutes, RequeueParcels
from meridian.domain.errors import NotFound
from meridian.ports import Query, Transaction
from services.dispatch.handlers import Answer, Deps
from services.dispatch.handlers.holdings import free, held, requeue_parcels


def release(command: ReleaseRoutes, deps: Deps) -> Answer:
    """Release one route (its driver and vehicle back to the pool), or, without ``route_id``,
    every route, driver and vehicle the window holds."""
    window_id, route = command.window_id, command.route_id
    if route is not None:
        routes = [route]
    else:
        routes = [
            d.id for d in deps.store.query(Query(rec.ROUTES).where("window_id", "==", window_id))
        ]
    for item in routes:

        def drop(tx: Transaction, item: str = item) -> None:
            doc = tx.get(f"{rec.ROUTES}/{item}")
            if doc is not None and doc.data["status"] != "RELEASED":
                tx.update(
                    f"{rec.ROUTES}/{item}", {"status": "RELEASED", "released_at": deps.clock()}
                )

        deps.store.run_transaction(drop)
    drivers = [d["driver_id"] for d in held(deps.store, rec.DRIVERS, window_id)]
    vehicles = [v["vehicle_id"] for v in held(deps.store, rec.VEHICLES, window_id)]
    free(deps, rec.DRIVERS, drivers, window_id, route)
    free(deps, rec.VEHICLES, vehicles, window_id, route)
    return {"window_id": window_id, "released_routes": sorted(routes)}, []


def requeue(command: RequeueParcels, deps: Deps) -> Answer:
    """Parcels of one route (or of the whole window) back to CREATED."""
    window_id, route = command.window_id, command.route_id
    if route is not None:
        doc = deps.store.get(f"{rec.ROUTES}/{route}")
        if doc is None:
            raise NotFound(f"no route {route}")
        parcel_ids = list(doc.data["parcel_ids"])
    else:
        parcel_ids = [
            d.id for d in deps.store.query(Query(rec.PARCELS).where("window_id", "==", window_id))
        ]
    reason = command.reason or "dispatch compensation"
    moved = requeue_parcels(deps, window_id, parcel_ids, reason)
    return {"window_id": window_id, "route_id": route, "requeued": len(moved)}, []
