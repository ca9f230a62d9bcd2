"""Where the dispatch saga keeps its state in the document store, and the small reads it shares
with the command service (which opens windows and relays drivers' answers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meridian.domain.model import DispatchWindow
from meridian.ports import DocumentStore, Query

WINDOWS = "dispatch_windows"
ROUTES = "routes"
ASSIGNMENTS = "assignments"
DRIVERS = "drivers"
VEHICLES = "vehicles"
PARCELS = "parcels"
WORKFLOW = "dispatch"  # workflows/dispatch.yaml


def window_path(window_id: str) -> str:
    return f"{WINDOWS}/{window_id}"


def solution_path(window_id: str) -> str:
    return f"{WINDOWS}/{window_id}/plans/solution"


def route_id(window_id: str, number: int) -> str:
    return f"{window_id}-r{number:02d}"


def assignment_id(route: str, offer_number: int) -> str:
    return f"{route}-o{offer_number}"


def execution_id(window_id: str) -> str:
    """One window, one execution: starting the same window twice finds the first execution."""
    return f"dispatch-{window_id}"


def window_document(window: DispatchWindow, now: Any) -> dict[str, Any]:
    return {
        **window.model_dump(mode="python"),
        "opened_at": now,
        "updated_at": now,
        "progress": {"stage": "OPEN"},
        "requeued": [],
    }


def window_progress(store: DocumentStore, window_id: str) -> dict[str, Any] | None:
    """The window with its routes and offers, for the dispatch desk."""
    window = store.get(window_path(window_id))
    if window is None:
        return None
    routes = store.query(Query(ROUTES).where("window_id", "==", window_id))
    by_status: dict[str, int] = {}
    for route in routes:
        by_status[route.data["status"]] = by_status.get(route.data["status"], 0) + 1
    data = dict(window.data)
    return {
        "window_id": window_id,
        "status": data["status"],
        "execution_id": data.get("execution_id"),
        "window": data["window"],
        "opened_by": data["opened_by"],
        "progress": {**data.get("progress", {}), "routes_by_status": by_status},
        "routes": sorted(
            (
                {
                    "route_id": r.data["route_id"],
                    "status": r.data["status"],
                    "driver_id": r.data.get("driver_id"),
                    "vehicle_id": r.data["vehicle_id"],
                    "stops": len(r.data.get("stops", [])),
                    "offers": r.data.get("offers", 0),
                }
                for r in routes
            ),
            key=lambda r: str(r["route_id"]),
        ),
        "parcels_requeued": len(data.get("requeued", [])),
        "outcome": data.get("outcome"),
    }


def public(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}
