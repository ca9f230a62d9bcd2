"""The route board: the ETA reactor's projection of one route, and how a movement fact changes it.

A board is read from and written to ``route_board/{route_id}`` whole, in the document shape the
live map (``services/live_map/tracking.py`` ``route_view``) and boards written before read. A field
is written only when it says something: ``at_risk`` and ``breached`` only while true, an ETA, a
delivery time or what was shown and announced only once known (absent reads as null or false, and
the board stays smaller). A delivered stop keeps only what the map and its SLA need (``settle``).

Slotted dataclasses, not pydantic models: the board is read, folded and written on every movement
of its route, and its stops are decoded and encoded by hand at about a microsecond each, a few
percent of the reactor's CPU per delivery on a 25-stop route; a validating model per read would
cost several times that for values this reactor wrote itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meridian.domain.events import (
    DeliveryFailed,
    DomainEvent,
    GeofenceCrossed,
    ParcelDelivered,
    ParcelOutForDelivery,
)
from meridian.ports import GeoPoint

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"  # a stop's status


@dataclass(slots=True)
class BoardStop:
    """One parcel's stop on the board: where and by when, its status, its ETA, and what its
    status view last showed and RouteEtaUpdated last announced of it (while it is to come)."""

    sequence: int
    parcel_id: str
    lat: float
    lng: float
    window_end: datetime
    status: str  # PENDING, DELIVERED or FAILED
    client_id: str | None = None  # dropped once delivered
    eta: datetime | None = None
    done_at: datetime | None = None  # delivered or failed at
    announced_eta: datetime | None = None
    shown_eta: datetime | None = None
    shown_sla: str | None = None
    at_risk: bool = False
    breached: bool = False

    @classmethod
    def from_document(cls, data: Mapping[str, Any]) -> BoardStop:
        get = data.get
        return cls(
            data["sequence"],
            data["parcel_id"],
            data["lat"],
            data["lng"],
            data["window_end"],
            data["status"],
            get("client_id"),
            get("eta"),
            get("done_at"),
            get("announced_eta"),
            get("shown_eta"),
            get("shown_sla"),
            get("at_risk") or False,
            get("breached") or False,
        )

    def to_document(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "sequence": self.sequence,
            "parcel_id": self.parcel_id,
            "lat": self.lat,
            "lng": self.lng,
            "window_end": self.window_end,
            "status": self.status,
        }
        if self.client_id is not None:
            data["client_id"] = self.client_id
        if self.eta is not None:
            data["eta"] = self.eta
        if self.done_at is not None:
            data["done_at"] = self.done_at
        if self.announced_eta is not None:
            data["announced_eta"] = self.announced_eta
        if self.shown_eta is not None:
            data["shown_eta"] = self.shown_eta
        if self.shown_sla is not None:
            data["shown_sla"] = self.shown_sla
        if self.at_risk:
            data["at_risk"] = True
        if self.breached:
            data["breached"] = True
        return data

    def sla(self) -> str:
        """What the parcel's status view says of its delivery window."""
        if self.status == DELIVERED:
            assert self.done_at is not None  # set with the status
            return "met" if self.done_at <= self.window_end else "breached"
        if self.breached:
            return "breached"
        if self.status == FAILED:
            return "failed"
        return "at_risk" if self.at_risk else "on_track"

    def settle(self) -> None:
        """Keep of a delivered stop only what the map shows and its SLA needs. What was shown and
        announced of it, whether it was at risk and its client serve a stop still to come; and the
        board is rewritten whole on every movement of its route (the store clones, compares,
        encodes and logs it each time: its stops are about half of this reactor's CPU on a 25-stop
        route), half of it delivered stops on average.
        A delivered stop's view never changes after its delivery wrote it: its SLA depends on its
        window and delivery time only, and a new out-for-delivery makes it pending again."""
        self.announced_eta = self.shown_eta = None
        self.shown_sla = self.client_id = None
        self.at_risk = False


@dataclass(slots=True)
class RouteBoard:
    """A route as the ETA reactor knows it: its stops by parcel, its vehicle and driver, where the
    vehicle last was (``position`` at ``position_at``, at stop ``at_stop`` if a delivery said so),
    the latest fact's time (``as_of``), and ``next_due``, the earliest window end among the stops
    to come not yet announced breached (the tick's due-time index)."""

    route_id: str
    stops: dict[str, BoardStop] = field(default_factory=dict)
    vehicle_id: str | None = None
    driver_id: str | None = None
    as_of: datetime | None = None
    position: GeoPoint | None = None
    position_at: datetime | None = None
    at_stop: int | None = None
    active: bool | None = None  # None: never written
    updated_at: datetime | None = None
    next_due: datetime | None = None

    @classmethod
    def from_document(cls, route_id: str, data: Mapping[str, Any]) -> RouteBoard:
        get = data.get
        position = get("position")
        return cls(
            get("route_id", route_id),
            {parcel: BoardStop.from_document(stop) for parcel, stop in get("stops", {}).items()},
            get("vehicle_id"),
            get("driver_id"),
            get("as_of"),
            None if position is None else GeoPoint(lat=position["lat"], lng=position["lng"]),
            get("position_at"),
            get("at_stop"),
            get("active"),
            get("updated_at"),
            get("next_due"),
        )

    def to_document(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "route_id": self.route_id,
            "stops": {parcel: stop.to_document() for parcel, stop in self.stops.items()},
        }
        optional = (
            ("vehicle_id", self.vehicle_id),
            ("driver_id", self.driver_id),
            ("as_of", self.as_of),
            ("position_at", self.position_at),
            ("at_stop", self.at_stop),
            ("active", self.active),
            ("updated_at", self.updated_at),
            ("next_due", self.next_due),  # absent, not null: a range query on it skips the board
        )
        for name, value in optional:
            if value is not None:
                data[name] = value
        if self.position is not None:
            data["position"] = {"lat": self.position.lat, "lng": self.position.lng}
        return data

    def pending(self) -> bool:
        return any(stop.status == PENDING for stop in self.stops.values())

    def fold(self, event: DomainEvent) -> None:
        """Apply a movement fact (stops, vehicle position, clock of the route)."""
        stops = self.stops
        if isinstance(event, ParcelOutForDelivery):
            # The route's planned order; a parcel sent out without one joins the end of the route.
            stop = stops.get(event.parcel_id)
            if event.stop_sequence is not None:
                sequence = event.stop_sequence
            else:
                sequence = len(stops) if stop is None else stop.sequence
            if stop is None:
                stops[event.parcel_id] = BoardStop(
                    sequence,
                    event.parcel_id,
                    event.lat,
                    event.lng,
                    event.window_end,
                    PENDING,
                    event.client_id,
                )
            else:
                stop.sequence, stop.client_id = sequence, event.client_id
                stop.lat, stop.lng, stop.window_end = event.lat, event.lng, event.window_end
                stop.status = PENDING
            self.vehicle_id, self.driver_id = event.vehicle_id, event.driver_id
            self._clock(event.occurred_at)
        elif isinstance(event, ParcelDelivered | DeliveryFailed):
            at = event.delivered_at if isinstance(event, ParcelDelivered) else event.failed_at
            stop = stops.get(event.parcel_id)
            if stop is not None:
                stop.status = DELIVERED if isinstance(event, ParcelDelivered) else FAILED
                stop.done_at = at
            if isinstance(event, ParcelDelivered):
                self._moved_to(event.lat, event.lng, at, None if stop is None else stop.sequence)
            self._clock(at)
        elif isinstance(event, GeofenceCrossed):
            self._moved_to(event.lat, event.lng, event.crossed_at)
            self._clock(event.crossed_at)

    def _clock(self, at: datetime) -> None:
        self.as_of = at if self.as_of is None else max(self.as_of, at)

    def _moved_to(self, lat: float, lng: float, at: datetime, sequence: int | None = None) -> None:
        """The vehicle was at (lat, lng) at ``at``: its position, unless the board already knows
        a later one (two deliveries of a route can arrive in either order; the later one is where
        the vehicle is). Compared with the time of the last position, not with ``as_of``: that
        also counts the server's clock at out-for-delivery, and a driver's clock may be a little
        behind. ``sequence`` is the stop the vehicle is at (a delivery), so the stops before it
        are behind it; a geofence crossing leaves that as it was."""
        if self.position_at is None or at >= self.position_at:
            self.position = GeoPoint(lat=lat, lng=lng)
            self.position_at = at
            if sequence is not None:
                self.at_stop = sequence
