"""Shipments and parcel moves: a client's shipment accepted, a parcel moved through its states by
its driver or the dispatch desk, and its status read back.

Every write is one transaction that also records the idempotency ledger entry, so a retried
request returns the first response and writes nothing more. The commit is the event: the event
publisher turns each committed state change into a domain event (Eventarc's native outbox). The
moves that put a driver on a vehicle (``:assign``, ``:out-for-delivery``) also record it, in the
same transaction, on the vehicle's assignment (``meridian.app.records``), which telemetry reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from meridian.app.idempotency import RequestKey, record_response, replayed_response
from meridian.app.records import (
    assigned_driver,
    parcel_document,
    parcel_from_document,
    shipment_document,
    vehicle_assignment_document,
    vehicle_assignment_path,
)
from meridian.domain.actors import Actor
from meridian.domain.commands import (
    AssignParcel,
    CreateShipment,
    DeliverParcel,
    FailDelivery,
    RequeueParcel,
    ReturnParcel,
    SendOutForDelivery,
)
from meridian.domain.errors import NotFound, PermissionDenied
from meridian.domain.model import Parcel, Shipment
from meridian.ports import Transaction
from services.command.handlers import Deps


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# Shipments -------------------------------------------------------------------------------------


def create_shipment(
    cmd: CreateShipment, actor: Actor, deps: Deps, request: RequestKey | None
) -> dict[str, Any]:
    """Accept a client's shipment and its parcels in one transaction."""
    actor.require("client")
    if cmd.client_id != actor.subject:
        raise PermissionDenied(
            f"client {actor.subject} cannot create shipments for {cmd.client_id}"
        )
    now = deps.clock()
    shipment_id = cmd.shipment_id or _new_id("s")
    parcels = [
        Parcel(
            parcel_id=new.parcel_id or _new_id("p"),
            shipment_id=shipment_id,
            client_id=cmd.client_id,
            recipient=new.recipient,
            stop=new.stop,
            weight_kg=new.weight_kg,
        )
        for new in cmd.parcels
    ]
    shipment = Shipment(
        shipment_id=shipment_id,
        client_id=cmd.client_id,
        parcel_ids=tuple(p.parcel_id for p in parcels),
        created_at=now,
    )

    def work(tx: Transaction) -> dict[str, Any]:
        if (replay := replayed_response(tx, request)) is not None:
            return replay
        tx.create(f"shipments/{shipment_id}", shipment_document(shipment, now))
        for parcel in parcels:
            tx.create(
                f"parcels/{parcel.parcel_id}", parcel_document(parcel, now, "CreateShipment", actor)
            )
        response = {
            "shipment_id": shipment_id,
            "parcel_ids": list(shipment.parcel_ids),
            "status_url": f"/v1/shipments/{shipment_id}",
            "parcel_status_urls": [f"/v1/parcels/{p}" for p in shipment.parcel_ids],
            "accepted_at": now.isoformat(),
        }
        record_response(tx, request, response, now)
        return response

    return deps.store.run_transaction(work)


def get_shipment(shipment_id: str, actor: Actor, deps: Deps) -> dict[str, Any]:
    document = deps.store.get(f"shipments/{shipment_id}")
    if document is None or (actor.role == "client" and document.data["client_id"] != actor.subject):
        raise NotFound(f"no shipment {shipment_id}")
    statuses = {}
    for parcel_id in document.data["parcel_ids"]:
        parcel = deps.store.get(f"parcels/{parcel_id}")
        statuses[parcel_id] = parcel.data["status"] if parcel else "UNKNOWN"
    return {**_public(document.data), "parcels": statuses}


# Parcel moves ----------------------------------------------------------------------------------


# A parcel move is returned as the transaction to run, not run here: the route hands it to the
# group committer (``meridian/concurrency/group_commit.py``), which commits the moves that arrive
# together in one go.
Move = Callable[[Transaction], dict[str, Any]]


def _move_parcel(
    parcel_id: str,
    command_name: str,
    actor: Actor,
    deps: Deps,
    request: RequestKey | None,
    move: Callable[[Parcel], Parcel],
    authorize: Callable[[Parcel], None],
    puts_driver_on_vehicle: bool = False,
) -> Move:
    now = deps.clock()

    def work(tx: Transaction) -> dict[str, Any]:
        if (replay := replayed_response(tx, request)) is not None:
            return replay
        document = tx.get(f"parcels/{parcel_id}")
        if document is None:
            raise NotFound(f"no parcel {parcel_id}")
        parcel = parcel_from_document(document.data)
        authorize(parcel)
        moved = move(parcel)
        if puts_driver_on_vehicle:
            _record_vehicle_assignment(tx, moved, now, command_name, actor)
        tx.set(f"parcels/{parcel_id}", parcel_document(moved, now, command_name, actor))
        response = {
            "parcel_id": parcel_id,
            "status": moved.status.value,
            "accepted_at": now.isoformat(),
        }
        record_response(tx, request, response, now)
        return response

    return work


def _record_vehicle_assignment(
    tx: Transaction, parcel: Parcel, now: datetime, command_name: str, actor: Actor
) -> None:
    """The parcel's driver drives its vehicle (the one the desk assigned: never a vehicle a
    driver names, or a driver could claim any vehicle by naming it). An assignment already naming
    the driver is left as it is: it keeps its ``since``, and a driver sending out the many parcels
    of one vehicle together does not write its one document as many times (on Firestore, a
    document sustains about one write a second)."""
    if parcel.driver_id is None or parcel.vehicle_id is None:
        return
    path = vehicle_assignment_path(parcel.vehicle_id)
    if assigned_driver(tx.get(path)) != parcel.driver_id:
        document = vehicle_assignment_document(
            parcel.vehicle_id, parcel.driver_id, now, command_name, actor
        )
        tx.set(path, document)


def _the_assigned_driver(actor: Actor, driver_id: str) -> Callable[[Parcel], None]:
    """Drivers act only for themselves, and only on parcels assigned to them once assigned."""

    def check(parcel: Parcel) -> None:
        actor.require("driver")
        if driver_id != actor.subject:
            raise PermissionDenied(f"driver {actor.subject} cannot act as driver {driver_id}")
        if parcel.driver_id is not None and parcel.driver_id != actor.subject:
            raise PermissionDenied(f"parcel {parcel.parcel_id} is assigned to another driver")

    return check


def send_out_for_delivery(
    cmd: SendOutForDelivery, actor: Actor, deps: Deps, request: RequestKey | None
) -> Move:
    return _move_parcel(
        cmd.parcel_id,
        "SendOutForDelivery",
        actor,
        deps,
        request,
        lambda p: p.send_out(),
        _the_assigned_driver(actor, cmd.driver_id),
        puts_driver_on_vehicle=True,
    )


def deliver_parcel(
    cmd: DeliverParcel, actor: Actor, deps: Deps, request: RequestKey | None
) -> Move:
    return _move_parcel(
        cmd.parcel_id,
        "DeliverParcel",
        actor,
        deps,
        request,
        lambda p: p.deliver(cmd.delivered_at, cmd.position, cmd.pod),
        _the_assigned_driver(actor, cmd.driver_id),
    )


def fail_delivery(cmd: FailDelivery, actor: Actor, deps: Deps, request: RequestKey | None) -> Move:
    return _move_parcel(
        cmd.parcel_id,
        "FailDelivery",
        actor,
        deps,
        request,
        lambda p: p.fail(cmd.reason),
        _the_assigned_driver(actor, cmd.driver_id),
    )


def _dispatcher_only(actor: Actor) -> Callable[[Parcel], None]:
    return lambda _: actor.require("dispatcher")


def assign_parcel(cmd: AssignParcel, actor: Actor, deps: Deps, request: RequestKey | None) -> Move:
    """Manual dispatch from the desk: plan a parcel into a window and assign it in one step."""

    def plan_and_assign(parcel: Parcel) -> Parcel:
        planned = parcel.plan(cmd.window_id) if parcel.status == "CREATED" else parcel
        return planned.assign(cmd.route_id, cmd.driver_id, cmd.vehicle_id, cmd.stop_sequence)

    return _move_parcel(
        cmd.parcel_id,
        "AssignParcel",
        actor,
        deps,
        request,
        plan_and_assign,
        _dispatcher_only(actor),
        puts_driver_on_vehicle=True,
    )


def requeue_parcel(
    cmd: RequeueParcel, actor: Actor, deps: Deps, request: RequestKey | None
) -> Move:
    return _move_parcel(
        cmd.parcel_id,
        "RequeueParcel",
        actor,
        deps,
        request,
        lambda p: p.requeue(),
        _dispatcher_only(actor),
    )


def return_parcel(cmd: ReturnParcel, actor: Actor, deps: Deps, request: RequestKey | None) -> Move:
    return _move_parcel(
        cmd.parcel_id,
        "ReturnParcel",
        actor,
        deps,
        request,
        lambda p: p.return_to_sender(),
        _dispatcher_only(actor),
    )


def get_parcel_status(parcel_id: str, actor: Actor, deps: Deps) -> dict[str, Any]:
    """The parcel's status from the ``parcel_status`` read model (ETA and SLA included once the
    ETA reactor has projected it), else from the parcel itself."""
    parcel = deps.store.get(f"parcels/{parcel_id}")
    if parcel is None or (actor.role == "client" and parcel.data["client_id"] != actor.subject):
        raise NotFound(f"no parcel {parcel_id}")
    view = deps.store.get(f"parcel_status/{parcel_id}")
    status = {
        "parcel_id": parcel_id,
        "shipment_id": parcel.data["shipment_id"],
        "status": parcel.data["status"],
        "updated_at": parcel.data["updated_at"],
        "driver_id": parcel.data.get("driver_id"),
        "vehicle_id": parcel.data.get("vehicle_id"),
        "window_end": parcel.data["stop"]["window"]["end"],
    }
    if view is not None:
        status.update(
            {k: v for k, v in view.data.items() if k in ("eta", "sla", "route_id", "pod_complete")}
        )
    return status


def _public(data: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(data).items() if not k.startswith("_")}
