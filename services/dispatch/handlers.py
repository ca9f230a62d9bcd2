"""The dispatch saga's steps, one function each, called by ``workflows/dispatch.yaml`` over HTTP.

Every step is idempotent by construction (re-running it after it succeeded finds its work done,
changes nothing and answers the same), and ``run_step`` adds the ledger keyed by the workflow's
idempotency key, so a retried call gets the first answer back. Steps that touch many parcels
commit in chunks below Firestore's 500 writes per transaction; a retry after a crash between
chunks simply finishes the rest. Events are published after the commit with ids derived from
what they describe, so a step re-run after a failed publish republishes the same event ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meridian.app import dispatch_records as rec
from meridian.app.idempotency import EXPIRY_FIELD, REQUEST_LEDGER, REQUEST_TTL
from meridian.app.records import parcel_document, parcel_from_document
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.domain.actors import Actor
from meridian.domain.errors import AlreadyExists, Conflict, NotFound, ValidationError
from meridian.domain.events import DomainEvent, derive_event_id
from meridian.domain.model import DispatchWindowStatus, DriverStatus, ParcelStatus, VehicleStatus
from meridian.ports import (
    Document,
    DocumentStore,
    GeoPoint,
    Publisher,
    Query,
    RouteOptimizer,
    RoutingProblem,
    Transaction,
)
from services.dispatch.ledger import LedgerWriter

EVENTS_TOPIC = "logistics.events"
CHUNK = 200  # documents per transaction, well under Firestore's 500 writes
SAGA = Actor(subject="dispatch-saga", role="dispatcher")
Events = list[DomainEvent]


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    publisher: Publisher
    codec: EventCodec
    optimizer: RouteOptimizer
    clock: Callable[[], datetime]
    ledger: LedgerWriter | None = None  # None: each entry is created on its own


# The ledger ------------------------------------------------------------------------------------


def _ledger_path(key: str) -> str:
    return f"{REQUEST_LEDGER}/{hashlib.sha256(f'dispatch:{key}'.encode()).hexdigest()[:40]}"


def run_step(
    name: str,
    key: str | None,
    body: Mapping[str, Any],
    deps: Deps,
    step: Callable[[Mapping[str, Any], Deps], tuple[dict[str, Any], Events]],
) -> dict[str, Any]:
    """Run one step under its idempotency key: the first answer is stored and replayed; the same
    key with another body is refused (a bug in the workflow, not a retry)."""
    fingerprint = hashlib.sha256(
        json.dumps([name, body], sort_keys=True, default=str).encode()
    ).hexdigest()
    if key:
        entry = deps.store.get(_ledger_path(key))
        if entry is not None:
            if entry.data["fingerprint"] != fingerprint:
                raise Conflict(f"idempotency key {key!r} was used for another {name} request")
            return dict(entry.data["response"])
    response, events = step(body, deps)
    if events:
        deps.publisher.publish(EVENTS_TOPIC, [deps.codec.to_message(e) for e in events])
    if key:
        now = deps.clock()
        record = {
            "scope": "dispatch",
            "key": key,
            "fingerprint": fingerprint,
            "response": response,
            "created_at": now,
            EXPIRY_FIELD: now + REQUEST_TTL,
        }
        if deps.ledger is not None:
            deps.ledger.create(_ledger_path(key), record)
        else:
            # AlreadyExists: a concurrent retry finished first; both answers are the same by
            # construction
            with contextlib.suppress(AlreadyExists):
                deps.store.create(_ledger_path(key), record)
    return response


# Shared reads and moves -------------------------------------------------------------------------


def _window(store: DocumentStore, window_id: str) -> dict[str, Any]:
    doc = store.get(rec.window_path(window_id))
    if doc is None:
        raise NotFound(f"no dispatch window {window_id}")
    return dict(doc.data)


def _progress(deps: Deps, window_id: str, **fields: Any) -> None:
    deps.store.update(
        rec.window_path(window_id),
        {**{f"progress.{k}": v for k, v in fields.items()}, "updated_at": deps.clock()},
    )


def _held(store: DocumentStore, collection: str, window_id: str) -> list[dict[str, Any]]:
    return [
        dict(d.data) for d in store.query(Query(collection).where("window_id", "==", window_id))
    ]


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def _requeue_parcels(
    deps: Deps, window_id: str, parcel_ids: Sequence[str], reason: str
) -> list[str]:
    """Give planned or assigned parcels of this window back to CREATED; returns those moved now
    or by an earlier run (so a retry reports the same list)."""
    now = deps.clock()
    moved: list[str] = []
    for chunk in _chunks(sorted(parcel_ids)):

        def work(tx: Transaction, chunk: Sequence[str] = chunk) -> list[str]:
            done = []
            docs = [(pid, tx.get(f"{rec.PARCELS}/{pid}")) for pid in chunk]  # reads before writes
            for parcel_id, doc in docs:
                if doc is None:
                    continue
                parcel = parcel_from_document(doc.data)
                if parcel.window_id == window_id and parcel.status in (
                    ParcelStatus.PLANNED,
                    ParcelStatus.ASSIGNED,
                ):
                    document = parcel_document(parcel.requeue(), now, "RequeueParcel", SAGA)
                    document.update(requeued_from=window_id, requeue_reason=reason)
                    tx.set(f"{rec.PARCELS}/{parcel_id}", document)
                    done.append(parcel_id)
                elif (
                    parcel.status == ParcelStatus.CREATED
                    and doc.data.get("requeued_from") == window_id
                ):
                    done.append(parcel_id)
            return done

        moved += deps.store.run_transaction(work)

    def note(tx: Transaction) -> None:
        window = tx.get(rec.window_path(window_id))
        if window is not None:
            requeued = sorted(set(window.data.get("requeued", [])) | set(moved))
            tx.update(rec.window_path(window_id), {"requeued": requeued, "updated_at": now})

    deps.store.run_transaction(note)
    return moved


def _free(
    deps: Deps, collection: str, ids: Sequence[str], window_id: str, route: str | None
) -> None:
    """Put drivers or vehicles held by this window (and route, if given) back in the pool."""
    available = DriverStatus.AVAILABLE if collection == rec.DRIVERS else VehicleStatus.AVAILABLE

    def work(tx: Transaction) -> None:
        docs = [(item, tx.get(f"{collection}/{item}")) for item in ids]  # reads before writes
        for item, doc in docs:
            if doc is None or doc.data.get("window_id") != window_id:
                continue
            if route is not None and doc.data.get("route_id") not in (route, None):
                continue
            tx.update(
                f"{collection}/{item}",
                {"status": available.value, "window_id": None, "route_id": None},
            )

    deps.store.run_transaction(work)


# Steps -----------------------------------------------------------------------------------------


def reserve(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """Plan the CREATED parcels whose promised window overlaps this one into it, and hold every
    available driver and vehicle for it (``assign`` releases those the routes do not use)."""
    window_id = body["window_id"]
    window = _window(deps.store, window_id)
    starts, ends = window["window"]["start"], window["window"]["end"]
    now = deps.clock()
    candidates = [
        d.id
        for d in deps.store.query(
            Query(rec.PARCELS).where("status", "==", ParcelStatus.CREATED.value)
        )
        if d.data["stop"]["window"]["end"] > starts and d.data["stop"]["window"]["start"] < ends
    ]
    for chunk in _chunks(candidates):

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
        free = [d.id for d in deps.store.query(Query(collection).where("status", "==", status))]

        def hold(
            tx: Transaction,
            collection: str = collection,
            free: list[str] = free,
            status: str = status,
            reserved: str = reserved,
        ) -> None:
            docs = [(item, tx.get(f"{collection}/{item}")) for item in free]
            for item, doc in docs:
                if doc is not None and doc.data["status"] == status:
                    tx.update(f"{collection}/{item}", {"status": reserved, "window_id": window_id})

        deps.store.run_transaction(hold)
        counts[collection] = len(_held(deps.store, collection, window_id))
    planned = _planned(deps.store, window_id)
    deps.store.update(
        rec.window_path(window_id),
        {"status": DispatchWindowStatus.PLANNING.value, "updated_at": now},
    )
    result = {"window_id": window_id, "parcels": len(planned), **counts}
    _progress(
        deps, window_id, stage="RESERVED", **{k: v for k, v in result.items() if k != "window_id"}
    )
    return result, []


def _planned(store: DocumentStore, window_id: str) -> list[dict[str, Any]]:
    return [
        dict(d.data)
        for d in store.query(Query(rec.PARCELS).where("window_id", "==", window_id))
        if d.data["status"] == ParcelStatus.PLANNED.value
    ]


def optimize(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """Solve the window's routes once and keep the solution; a retry reads it back."""
    window_id = body["window_id"]
    time_limit = float(body.get("time_limit_s", 10))
    existing = deps.store.get(rec.solution_path(window_id))
    if existing is None:
        window = _window(deps.store, window_id)
        parcels = _planned(deps.store, window_id)
        drivers = _held(deps.store, rec.DRIVERS, window_id)
        vehicles = sorted(
            _held(deps.store, rec.VEHICLES, window_id),
            key=lambda v: (-v["capacity_kg"], v["vehicle_id"]),
        )[: len(drivers)]  # a vehicle without a driver goes nowhere
        problem = RoutingProblem(
            depot=GeoPoint(window["depot"]["lat"], window["depot"]["lng"]),
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
            starts_at=max(window["window"]["start"], deps.clock()),
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
    _progress(
        deps, window_id, stage="OPTIMIZED", **{k: v for k, v in result.items() if k != "window_id"}
    )
    return result, []


def assign(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """Turn the solution into routes, each proposed to one held driver; give back what no route
    uses, and re-queue the parcels the optimizer could not serve."""
    window_id = body["window_id"]
    solution = deps.store.get(rec.solution_path(window_id))
    if solution is None:
        raise NotFound(f"window {window_id} has no solution yet; run optimize first")
    now = deps.clock()
    drivers = sorted(d["driver_id"] for d in _held(deps.store, rec.DRIVERS, window_id))
    routes = list(solution.data["routes"])
    if len(routes) > len(drivers):
        raise Conflict(f"{len(routes)} routes but only {len(drivers)} drivers held")
    planned = [
        {"route_id": rec.route_id(window_id, n), "driver_id": driver, "vehicle_id": p["vehicle_id"]}
        for n, (p, driver) in enumerate(zip(routes, drivers, strict=False), start=1)
    ]
    plans = list(zip(planned, routes, strict=False))
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
    used_vehicles = {r["vehicle_id"] for r in planned}
    _free(deps, rec.DRIVERS, drivers[len(planned) :], window_id, None)
    spare = [
        v["vehicle_id"]
        for v in _held(deps.store, rec.VEHICLES, window_id)
        if v["vehicle_id"] not in used_vehicles
    ]
    _free(deps, rec.VEHICLES, spare, window_id, None)
    unserved = solution.data["unserved"]
    by_reason: dict[str, list[str]] = {}
    for item in unserved:
        by_reason.setdefault(item["reason"], []).append(item["id"])
    requeued = 0
    for reason, ids in by_reason.items():
        requeued += len(_requeue_parcels(deps, window_id, ids, f"not routed: {reason}"))
    _progress(deps, window_id, stage="ASSIGNED", routes=len(planned), unserved=len(unserved))
    return {
        "window_id": window_id,
        "routes": planned,
        "route_ids": [r["route_id"] for r in planned],
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


def offer(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """Offer a route: the first offer goes to the driver ``assign`` proposed, a re-offer to
    another available driver who has not declined it. No driver left: ``assignment_id`` null."""
    window_id, route = body["window_id"], body["route_id"]
    number = int(body["offer_number"])
    assignment = rec.assignment_id(route, number)
    now = deps.clock()
    expires = now + timedelta(seconds=float(body.get("timeout_s", 900)))

    def work(tx: Transaction) -> dict[str, Any] | None:
        existing = tx.get(f"{rec.ASSIGNMENTS}/{assignment}")
        if existing is not None:
            return dict(existing.data)
        route_doc = tx.get(f"{rec.ROUTES}/{route}")
        if route_doc is None:
            raise NotFound(f"no route {route}")
        driver = route_doc.data.get("driver_id") if number == 1 else None
        if driver is None:
            declined = set(route_doc.data.get("declined_by", []))
            pool = deps.store.query(
                Query(rec.DRIVERS).where("status", "==", DriverStatus.AVAILABLE.value)
            )
            for candidate in sorted(pool, key=lambda d: d.id):
                if candidate.id in declined:
                    continue
                fresh = tx.get(candidate.path)  # read in the transaction: two routes, one driver
                if fresh is not None and fresh.data["status"] == DriverStatus.AVAILABLE.value:
                    driver = candidate.id
                    tx.update(
                        candidate.path,
                        {
                            "status": DriverStatus.RESERVED.value,
                            "window_id": window_id,
                            "route_id": route,
                        },
                    )
                    break
        if driver is None:
            return None
        return _write_offer(tx, route_doc, driver, number, body["callback_url"], now, expires)

    data = deps.store.run_transaction(work)
    if data is None:
        return {"assignment_id": None, "route_id": route, "reason": "no available driver"}, []
    return _offered(data), [_offer_event(data)]


def _write_offer(
    tx: Transaction,
    route_doc: Document,
    driver: str,
    number: int,
    callback_url: str,
    now: datetime,
    expires: datetime,
) -> dict[str, Any]:
    route = route_doc.data["route_id"]
    data = {
        "assignment_id": rec.assignment_id(route, number),
        "window_id": route_doc.data["window_id"],
        "route_id": route,
        "driver_id": driver,
        "vehicle_id": route_doc.data["vehicle_id"],
        "offer_number": number,
        "callback_url": callback_url,
        "status": "OFFERED",
        "offered_at": now,
        "expires_at": expires,
    }
    tx.create(f"{rec.ASSIGNMENTS}/{data['assignment_id']}", data)
    tx.update(route_doc.path, {"status": "OFFERED", "driver_id": driver, "offers": number})
    return data


def _offered(data: Mapping[str, Any]) -> dict[str, Any]:
    """A step's answer for one offer; ``expires_at`` lets the saga wait exactly until then."""
    return {
        "assignment_id": data["assignment_id"],
        "route_id": data["route_id"],
        "driver_id": data["driver_id"],
        "expires_at": data["expires_at"].isoformat(),
    }


def _offer_event(data: Mapping[str, Any]) -> DomainEvent:
    return ev.DriverAssignmentOffered(
        event_id=derive_event_id("DriverAssignmentOffered", data["assignment_id"]),
        occurred_at=data["offered_at"],
        assignment_id=data["assignment_id"],
        window_id=data["window_id"],
        route_id=data["route_id"],
        driver_id=data["driver_id"],
        vehicle_id=data["vehicle_id"],
        expires_at=data["expires_at"],
        offer_number=data["offer_number"],
    )


def offer_routes(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """The first offer of every route at once, each to the driver ``assign`` proposed: one call
    and a few transactions instead of one of each per route, and every driver hears of their
    route now, not when a parallel branch of the saga gets its turn (Workflows runs at most 20
    at a time). ``offers`` is ``[{route_id, callback_url}]``; the answers come in that order."""
    window_id = body["window_id"]
    requested = body["offers"]
    if not isinstance(requested, list) or not all(
        isinstance(i, dict) and i.get("route_id") and i.get("callback_url") for i in requested
    ):
        raise ValidationError("offers must be a list of {route_id, callback_url}")
    now = deps.clock()
    expires = now + timedelta(seconds=float(body.get("timeout_s", 900)))
    found: dict[str, dict[str, Any] | None] = {}
    for start in range(0, len(requested), CHUNK // 2):  # two writes per route

        def work(tx: Transaction, chunk: list[Any] = requested[start : start + CHUNK // 2]) -> None:
            # every read before the first write, as Firestore transactions require
            reads = [
                (
                    item,
                    tx.get(f"{rec.ASSIGNMENTS}/{rec.assignment_id(item['route_id'], 1)}"),
                    tx.get(f"{rec.ROUTES}/{item['route_id']}"),
                )
                for item in chunk
            ]
            for item, existing, route_doc in reads:
                if existing is not None:
                    found[item["route_id"]] = dict(existing.data)
                    continue
                if route_doc is None or route_doc.data["window_id"] != window_id:
                    raise NotFound(f"no route {item['route_id']} in window {window_id}")
                driver = route_doc.data.get("driver_id")
                found[item["route_id"]] = (
                    None
                    if driver is None  # nobody proposed: offer() looks in the pool below
                    else _write_offer(tx, route_doc, driver, 1, item["callback_url"], now, expires)
                )

        deps.store.run_transaction(work)
    answers: list[dict[str, Any]] = []
    events: Events = []
    for item in requested:
        data = found[item["route_id"]]
        if data is None:
            single = {**item, "window_id": window_id, "offer_number": 1, **_timeout(body)}
            answer, more = offer(single, deps)
            answers.append(answer)
            events += more
        else:
            answers.append(_offered(data))
            events.append(_offer_event(data))
    return {"window_id": window_id, "offers": answers}, events


def _timeout(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"timeout_s": body["timeout_s"]} if "timeout_s" in body else {}


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


def confirm(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """The driver accepted: the route is confirmed and its parcels assigned to driver and vehicle."""
    data = _answer(deps, body["assignment_id"], "ACCEPTED", None)
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


def decline(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """The driver declined, or let the offer expire: the driver goes back to the pool."""
    expired = bool(body.get("expired"))
    reason = "offer expired" if expired else str(body.get("reason") or "declined")[:500]
    data = _answer(deps, body["assignment_id"], "EXPIRED" if expired else "DECLINED", reason)
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


def release(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """Compensation: release one route (its driver and vehicle back to the pool), or, without
    ``route_id``, every route, driver and vehicle the window holds."""
    window_id, route = body["window_id"], body.get("route_id")
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
    drivers = [d["driver_id"] for d in _held(deps.store, rec.DRIVERS, window_id)]
    vehicles = [v["vehicle_id"] for v in _held(deps.store, rec.VEHICLES, window_id)]
    _free(deps, rec.DRIVERS, drivers, window_id, route)
    _free(deps, rec.VEHICLES, vehicles, window_id, route)
    return {"window_id": window_id, "released_routes": sorted(routes)}, []


def requeue(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """Compensation: parcels of one route (or of the whole window) back to CREATED."""
    window_id, route = body["window_id"], body.get("route_id")
    if route is not None:
        doc = deps.store.get(f"{rec.ROUTES}/{route}")
        if doc is None:
            raise NotFound(f"no route {route}")
        parcel_ids = list(doc.data["parcel_ids"])
    else:
        parcel_ids = [
            d.id for d in deps.store.query(Query(rec.PARCELS).where("window_id", "==", window_id))
        ]
    reason = str(body.get("reason") or "dispatch compensation")
    moved = _requeue_parcels(deps, window_id, parcel_ids, reason)
    return {"window_id": window_id, "route_id": route, "requeued": len(moved)}, []


def _finish(
    deps: Deps, window_id: str, status: DispatchWindowStatus, outcome: dict[str, Any]
) -> dict[str, Any]:
    now = deps.clock()

    def work(tx: Transaction) -> dict[str, Any]:
        doc = tx.get(rec.window_path(window_id))
        if doc is None:
            raise NotFound(f"no dispatch window {window_id}")
        if doc.data.get("outcome"):
            return dict(doc.data)  # the first recorded outcome stands
        data = {
            **doc.data,
            "status": status.value,
            "outcome": {**outcome, "at": now},
            "updated_at": now,
        }
        data["progress"] = {**doc.data.get("progress", {}), "stage": status.value}
        tx.set(rec.window_path(window_id), data)
        return data

    return deps.store.run_transaction(work)


def complete(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """The saga's happy end: confirmed routes and the parcels re-queued for the next window."""
    window_id, execution = body["window_id"], body["execution_id"]
    confirmed = sorted(
        d.id
        for d in deps.store.query(Query(rec.ROUTES).where("window_id", "==", window_id))
        if d.data["status"] == "CONFIRMED"
    )
    window = _finish(
        deps, window_id, DispatchWindowStatus.DISPATCHED, {"routes_confirmed": confirmed}
    )
    requeued = sorted(window.get("requeued", []))
    confirmed = list(window["outcome"].get("routes_confirmed", confirmed))
    event = ev.DispatchCompleted(
        event_id=derive_event_id("DispatchCompleted", window_id),
        occurred_at=window["outcome"]["at"],
        window_id=window_id,
        execution_id=execution,
        routes_confirmed=tuple(confirmed),
        parcels_requeued=tuple(requeued),
    )
    result = {
        "window_id": window_id,
        "status": window["status"],
        "routes_confirmed": confirmed,
        "parcels_requeued": len(requeued),
    }
    return result, [event]


def fail(body: Mapping[str, Any], deps: Deps) -> tuple[dict[str, Any], Events]:
    """The saga failed and compensated: record why, with the parcels it gave back."""
    window_id, execution = body["window_id"], body["execution_id"]
    reason = str(body.get("reason") or "dispatch failed")[:500]
    window = _finish(deps, window_id, DispatchWindowStatus.FAILED, {"reason": reason})
    requeued = sorted(window.get("requeued", []))
    event = ev.DispatchFailed(
        event_id=derive_event_id("DispatchFailed", window_id),
        occurred_at=window["outcome"]["at"],
        window_id=window_id,
        execution_id=execution,
        reason=window["outcome"].get("reason", reason),
        parcels_requeued=tuple(requeued),
    )
    return {
        "window_id": window_id,
        "status": window["status"],
        "parcels_requeued": len(requeued),
    }, [event]


STEPS: dict[str, Callable[[Mapping[str, Any], Deps], tuple[dict[str, Any], Events]]] = {
    "reserve": reserve,
    "optimize": optimize,
    "assign": assign,
    "offer": offer,
    "offer_routes": offer_routes,
    "confirm": confirm,
    "decline": decline,
    "release": release,
    "requeue": requeue,
    "complete": complete,
    "fail": fail,
}
REQUIRED = {
    "reserve": ("window_id",),
    "optimize": ("window_id",),
    "assign": ("window_id",),
    "offer": ("window_id", "route_id", "offer_number", "callback_url"),
    "offer_routes": ("window_id", "offers"),
    "confirm": ("assignment_id",),
    "decline": ("assignment_id",),
    "release": ("window_id",),
    "requeue": ("window_id",),
    "complete": ("window_id", "execution_id"),
    "fail": ("window_id", "execution_id"),
}


def check_body(name: str, body: Mapping[str, Any]) -> None:
    missing = [k for k in REQUIRED[name] if body.get(k) in (None, "")]
    if missing:
        raise ValidationError(f"{name} needs {', '.join(missing)}")
