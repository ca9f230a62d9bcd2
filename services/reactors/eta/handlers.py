"""ETA: recompute the remaining stops of a route on every movement fact, project the route board
and each parcel's status view, and announce RouteEtaUpdated / SlaAtRisk / SlaBreached.

The projections, the processed-event record and the events to announce (an outbox entry) commit in
one transaction; the outbox is published and cleared afterwards, and a redelivery of an event whose
outbox is still there publishes it then. Announced events have ids derived from the triggering
event, so a second publication is deduplicated downstream.

SLA breach is judged when the route is recomputed (any movement on it): a stop whose window has
closed undelivered is breached. There is no timer, so a route with no movement at all reports its
breach on its next event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meridian.codec import EventCodec
from meridian.domain.events import (
    DeliveryFailed,
    DomainEvent,
    GeofenceCrossed,
    ParcelDelivered,
    ParcelOutForDelivery,
    RouteEtaUpdated,
    SlaAtRisk,
    SlaBreached,
    StopEta,
    derive_event_id,
    event_class,
)
from meridian.idempotency import already_processed, mark_processed
from meridian.ports import DocumentStore, GeoPoint, Publisher, Query, Transaction, TravelTime

CONSUMER = "eta"
BOARDS = "route_board"
STATUS = "parcel_status"
OUTBOX = "eta_outbox"
EVENTS_TOPIC = "logistics.events"


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    publisher: Publisher
    codec: EventCodec
    travel: TravelTime
    clock: Callable[[], datetime]


def route_of(event: DomainEvent) -> str | None:
    route = getattr(event, "route_id", None)
    if route:
        return str(route)
    parcel = getattr(event, "parcel_id", None)
    return f"solo-{parcel}" if parcel else None  # a parcel sent out without a planned route


def _fold(board: dict[str, Any], event: DomainEvent) -> None:
    """Apply a movement fact to the route board (stops, vehicle position, clock of the route)."""
    stops: dict[str, Any] = board.setdefault("stops", {})
    if isinstance(event, ParcelOutForDelivery):
        stop = stops.get(event.parcel_id) or {"sequence": len(stops)}
        stop.update(
            parcel_id=event.parcel_id,
            client_id=event.client_id,
            lat=event.lat,
            lng=event.lng,
            window_end=event.window_end,
            status="pending",
        )
        stops[event.parcel_id] = stop
        board.update(vehicle_id=event.vehicle_id, driver_id=event.driver_id)
        board.setdefault("position", {"lat": event.lat, "lng": event.lng})
        board["as_of"] = max(board.get("as_of") or event.occurred_at, event.occurred_at)
    elif isinstance(event, ParcelDelivered | DeliveryFailed):
        at = event.delivered_at if isinstance(event, ParcelDelivered) else event.failed_at
        if event.parcel_id in stops:
            stops[event.parcel_id]["status"] = "delivered" if isinstance(event, ParcelDelivered) else "failed"
            stops[event.parcel_id]["done_at"] = at
        if isinstance(event, ParcelDelivered):
            board["position"] = {"lat": event.lat, "lng": event.lng}
        board["as_of"] = max(board.get("as_of") or at, at)
    elif isinstance(event, GeofenceCrossed):
        board["position"] = {"lat": event.lat, "lng": event.lng}
        board["as_of"] = max(board.get("as_of") or event.crossed_at, event.crossed_at)


def recompute(board: dict[str, Any], travel: TravelTime) -> list[dict[str, Any]]:
    """ETAs of the pending stops in sequence order, from the vehicle's last known position."""
    pending = sorted(
        (s for s in board.get("stops", {}).values() if s["status"] == "pending"),
        key=lambda s: s["sequence"],
    )
    at: datetime = board["as_of"]
    here = GeoPoint(**board["position"])
    for stop in pending:
        there = GeoPoint(stop["lat"], stop["lng"])
        at = at + timedelta(seconds=travel.seconds(here, there, at))
        stop["eta"] = at
        here = there
    return pending


def _announcements(
    trigger: DomainEvent, route_id: str, board: dict[str, Any], pending: list[dict[str, Any]]
) -> list[DomainEvent]:
    def ident(kind: str, subject: str) -> str:
        return derive_event_id(CONSUMER, trigger.event_id, kind, subject)

    now = trigger.occurred_at
    out: list[DomainEvent] = [
        RouteEtaUpdated(
            event_id=ident("RouteEtaUpdated", route_id),
            occurred_at=now,
            route_id=route_id,
            vehicle_id=board.get("vehicle_id"),
            driver_id=board.get("driver_id"),
            stops=tuple(
                StopEta(parcel_id=s["parcel_id"], sequence=s["sequence"], eta=s["eta"], window_end=s["window_end"])
                for s in pending
            ),
        )
    ]
    real_route = None if route_id.startswith("solo-") else route_id
    for stop in pending:
        if stop["window_end"] <= board["as_of"] and not stop.get("breached"):
            stop["breached"] = True
            out.append(
                SlaBreached(
                    event_id=ident("SlaBreached", stop["parcel_id"]),
                    occurred_at=now,
                    parcel_id=stop["parcel_id"],
                    route_id=real_route,
                    client_id=stop["client_id"],
                    window_end=stop["window_end"],
                )
            )
        elif stop["eta"] > stop["window_end"] and not stop.get("at_risk"):
            stop["at_risk"] = True
            out.append(
                SlaAtRisk(
                    event_id=ident("SlaAtRisk", stop["parcel_id"]),
                    occurred_at=now,
                    parcel_id=stop["parcel_id"],
                    route_id=real_route,
                    client_id=stop["client_id"],
                    eta=stop["eta"],
                    window_end=stop["window_end"],
                    minutes_late=round((stop["eta"] - stop["window_end"]).total_seconds() / 60, 1),
                )
            )
        elif stop["eta"] <= stop["window_end"]:
            stop["at_risk"] = False  # back on time: a later slip is announced again
    return out


def _sla(stop: dict[str, Any]) -> str:
    if stop["status"] == "delivered":
        return "met" if stop["done_at"] <= stop["window_end"] else "breached"
    if stop.get("breached"):
        return "breached"
    if stop["status"] == "failed":
        return "failed"
    return "at_risk" if stop.get("at_risk") else "on_track"


def _boards_for(tx: Transaction, event: DomainEvent) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(event, GeofenceCrossed):
        found = tx.query(Query(BOARDS).where("vehicle_id", "==", event.vehicle_id).where("active", "==", True))
        return [(d.id, dict(d.data)) for d in found]
    route_id = route_of(event)
    if route_id is None:
        return []
    current = tx.get(f"{BOARDS}/{route_id}")
    return [(route_id, dict(current.data) if current else {"route_id": route_id})]


def project(event: DomainEvent, deps: Deps) -> str:
    now = deps.clock()

    def record(tx: Transaction) -> list[DomainEvent] | None:
        if already_processed(tx, CONSUMER, event.event_id):
            return None
        announced: list[DomainEvent] = []
        for route_id, board in _boards_for(tx, event):
            _fold(board, event)
            if "as_of" not in board or "position" not in board:
                continue  # a stop finished before we ever saw it go out: nothing to estimate
            pending = recompute(board, deps.travel)
            announced += _announcements(event, route_id, board, pending)
            board.update(active=bool(pending), updated_at=now)
            tx.set(f"{BOARDS}/{route_id}", board)
            for stop in board["stops"].values():
                if stop["status"] == "pending" or stop.get("done_at") == _done_at(event):
                    tx.set(
                        f"{STATUS}/{stop['parcel_id']}",
                        {
                            "parcel_id": stop["parcel_id"],
                            "route_id": route_id,
                            "eta": stop.get("eta") if stop["status"] == "pending" else None,
                            "sla": _sla(stop),
                            "updated_at": now,
                        },
                        merge=True,
                    )
        if announced:
            tx.set(
                f"{OUTBOX}/{event.event_id}",
                {"events": [{"type": e.event_type, "body": e.model_dump(mode="python")} for e in announced]},
            )
        mark_processed(tx, CONSUMER, event.event_id, now)
        return announced

    announced = deps.store.run_transaction(record)
    if announced is None:
        return f"duplicate; {publish_outbox(event.event_id, deps)} republished"
    publish_outbox(event.event_id, deps)
    return f"{len(announced)} events announced"


def _done_at(event: DomainEvent) -> datetime | None:
    if isinstance(event, ParcelDelivered):
        return event.delivered_at
    if isinstance(event, DeliveryFailed):
        return event.failed_at
    return None


def publish_outbox(event_id: str, deps: Deps) -> int:
    """Publish what the transaction for ``event_id`` left to announce, then clear it."""
    entry = deps.store.get(f"{OUTBOX}/{event_id}")
    if entry is None:
        return 0
    events = [event_class(e["type"]).model_validate(e["body"]) for e in entry.data["events"]]
    deps.publisher.publish(EVENTS_TOPIC, [deps.codec.to_message(e) for e in events])
    deps.store.delete(f"{OUTBOX}/{event_id}")
    return len(events)
