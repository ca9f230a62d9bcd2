"""Offering routes to drivers: the first offer goes to the driver ``assign`` proposed, a re-offer
to another available driver who has not declined the route. Each offer is an assignment
(``assignments/{route}-o{n}``) that expires at ``expires_at``; the workflow waits for the driver's
answer on the offer's callback until then."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from meridian.app import dispatch_records as rec
from meridian.domain import events as ev
from meridian.domain.dispatch import OfferRoute, OfferRoutes, RouteOffer
from meridian.domain.errors import NotFound
from meridian.domain.events import DomainEvent, derive_event_id
from meridian.domain.model import DriverStatus
from meridian.ports import Document, Query, Transaction
from services.dispatch.handlers import CHUNK, Answer, Deps, Events


def offer(command: OfferRoute, deps: Deps) -> Answer:
    """Offer a route: the first offer goes to the driver ``assign`` proposed, a re-offer to
    another available driver who has not declined it. No driver left: ``assignment_id`` null."""
    window_id, route, number = command.window_id, command.route_id, command.offer_number
    assignment = rec.assignment_id(route, number)
    now = deps.clock()
    expires = now + timedelta(seconds=command.timeout_s)

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
        return _write_offer(tx, route_doc, driver, number, command.callback_url, now, expires)

    data = deps.store.run_transaction(work)
    if data is None:
        return {"assignment_id": None, "route_id": route, "reason": "no available driver"}, []
    return _offered(data), [_offer_event(data)]


def offer_routes(command: OfferRoutes, deps: Deps) -> Answer:
    """The first offer of every route at once, each to the driver ``assign`` proposed: one call
    and a few transactions instead of one of each per route, and every driver hears of their
    route now, not when a parallel branch of the saga gets its turn (Workflows runs at most 20
    at a time). The answers come in the order of ``offers``."""
    window_id, requested = command.window_id, command.offers
    now = deps.clock()
    expires = now + timedelta(seconds=command.timeout_s)
    found: dict[str, dict[str, Any] | None] = {}
    for start in range(0, len(requested), CHUNK // 2):  # two writes per route

        def work(
            tx: Transaction, chunk: tuple[RouteOffer, ...] = requested[start : start + CHUNK // 2]
        ) -> None:
            # every read before the first write, as Firestore transactions require
            reads = [
                (
                    item,
                    tx.get(f"{rec.ASSIGNMENTS}/{rec.assignment_id(item.route_id, 1)}"),
                    tx.get(f"{rec.ROUTES}/{item.route_id}"),
                )
                for item in chunk
            ]
            for item, existing, route_doc in reads:
                if existing is not None:
                    found[item.route_id] = dict(existing.data)
                    continue
                if route_doc is None or route_doc.data["window_id"] != window_id:
                    raise NotFound(f"no route {item.route_id} in window {window_id}")
                driver = route_doc.data.get("driver_id")
                found[item.route_id] = (
                    None
                    if driver is None  # nobody proposed: offer() looks in the pool below
                    else _write_offer(tx, route_doc, driver, 1, item.callback_url, now, expires)
                )

        deps.store.run_transaction(work)
    answers: list[dict[str, Any]] = []
    events: Events = []
    for item in requested:
        data = found[item.route_id]
        if data is None:
            single = OfferRoute(
                window_id=window_id,
                route_id=item.route_id,
                offer_number=1,
                callback_url=item.callback_url,
                timeout_s=command.timeout_s,
            )
            answer, more = offer(single, deps)
            answers.append(answer)
            events += more
        else:
            answers.append(_offered(data))
            events.append(_offer_event(data))
    return {"window_id": window_id, "offers": answers}, events


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
