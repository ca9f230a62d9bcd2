"""A driver's answer to an offer, as the saga records it: accepted (the route is confirmed, its
parcels assigned to driver and vehicle, and the vehicle's assignment names the driver, in one
transaction), or declined or expired (the driver goes back to the pool and the route waits for a
re-offer). The first recorded answer stands."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meridian.app import dispatch_records as rec
from meridian.app.records import (
    parcel_document,
    parcel_from_document,
    vehicle_assignment_document,
    vehicle_assignment_path,
)
from meridian.domain import events as ev
from meridian.domain.dispatch import ConfirmAssignment, DeclineAssignment
from meridian.domain.errors import Conflict, NotFound
from meridian.domain.events import derive_event_id
from meridian.domain.model import DriverStatus, ParcelStatus, VehicleStatus
from meridian.ports import Document, Transaction
from services.dispatch.handlers import SAGA, Answer, Deps


def confirm(command: ConfirmAssignment, deps: Deps) -> Answer:
    """The driver accepted: the route is confirmed and its parcels assigned to driver and vehicle."""
    data = _answer(deps, command.assignment_id, "ACCEPTED", None)
    event = ev.DriverAssignmentAccepted(
        event_id=derive_event_id("DriverAssignmentAccepted", data["assignment_id"]),
        occurred_at=data["answered_at"],
        assignment_id=data["assignment_id"],
        window_id=data["window_id"],
        route_id=data["route_id"],
        driver_id=data["driver_id"],
    )
    return {
        "assignment_id": data["assignment_id"],
        "route_id": data["route_id"],
        "status": "CONFIRMED",
    }, [event]


def decline(command: DeclineAssignment, deps: Deps) -> Answer:
    """The driver declined, or let the offer expire: the driver goes back to the pool."""
    expired = command.expired
    reason = "offer expired" if expired else (command.reason or "declined")[:500]
    data = _answer(deps, command.assignment_id, "EXPIRED" if expired else "DECLINED", reason)
    event = ev.DriverAssignmentDeclined(
        event_id=derive_event_id("DriverAssignmentDeclined", data["assignment_id"]),
        occurred_at=data["answered_at"],
        assignment_id=data["assignment_id"],
        window_id=data["window_id"],
        route_id=data["route_id"],
        driver_id=data["driver_id"],
        reason=data.get("reason"),
    )
    return {"assignment_id": data["assignment_id"], "status": data["status"]}, [event]


def _answer(deps: Deps, assignment: str, status: str, reason: str | None) -> dict[str, Any]:
    """Record the saga's view of an offer's end; the first recorded end stands."""
    now = deps.clock()

    def work(tx: Transaction) -> dict[str, Any]:
        doc = tx.get(f"{rec.ASSIGNMENTS}/{assignment}")
        if doc is None:
            raise NotFound(f"no assignment {assignment}")
        data = dict(doc.data)
        if data["status"] != "OFFERED":
            if (data["status"] == "ACCEPTED") != (status == "ACCEPTED"):
                raise Conflict(f"assignment {assignment} is already {data['status']}")
            return data
        # every read before the first write, as Firestore transactions require
        route_path = f"{rec.ROUTES}/{data['route_id']}"
        route = tx.get(route_path)
        assert route is not None
        driver_path = f"{rec.DRIVERS}/{data['driver_id']}"
        driver = tx.get(driver_path)
        parcels = {pid: tx.get(f"{rec.PARCELS}/{pid}") for pid in route.data["parcel_ids"]}
        data.update(status=status, answered_at=now, reason=reason)
        tx.update(
            f"{rec.ASSIGNMENTS}/{assignment}",
            {"status": status, "answered_at": now, "reason": reason},
        )
        if status == "ACCEPTED":
            _confirm_route(tx, dict(route.data), parcels, data, now)
        else:
            declined = sorted({*route.data.get("declined_by", []), data["driver_id"]})
            tx.update(route_path, {"status": "PLANNED", "driver_id": None, "declined_by": declined})
            if driver is not None and driver.data.get("route_id") == data["route_id"]:
                tx.update(
                    driver_path,
                    {"status": DriverStatus.AVAILABLE.value, "window_id": None, "route_id": None},
                )
        return data

    return deps.store.run_transaction(work)


def _confirm_route(
    tx: Transaction,
    route: dict[str, Any],
    parcels: Mapping[str, Document | None],
    offer: Mapping[str, Any],
    now: datetime,
) -> None:
    driver, vehicle, window_id = offer["driver_id"], route["vehicle_id"], route["window_id"]
    sequence = {stop["parcel_id"]: stop["sequence"] for stop in route["stops"]}
    for parcel_id, doc in parcels.items():
        if doc is None:
            continue
        parcel = parcel_from_document(doc.data)
        if parcel.status == ParcelStatus.PLANNED and parcel.window_id == window_id:
            moved = parcel.assign(route["route_id"], driver, vehicle, sequence.get(parcel_id))
            tx.set(f"{rec.PARCELS}/{parcel_id}", parcel_document(moved, now, "AssignParcel", SAGA))
    tx.update(
        f"{rec.ROUTES}/{route['route_id']}",
        {"status": "CONFIRMED", "driver_id": driver, "confirmed_at": now},
    )
    tx.update(
        f"{rec.DRIVERS}/{driver}",
        {"status": DriverStatus.ON_ROUTE.value, "route_id": route["route_id"]},
    )
    tx.update(f"{rec.VEHICLES}/{vehicle}", {"status": VehicleStatus.ON_ROUTE.value})
    tx.set(
        vehicle_assignment_path(vehicle),
        vehicle_assignment_document(vehicle, driver, now, "ConfirmAssignment", SAGA),
    )
