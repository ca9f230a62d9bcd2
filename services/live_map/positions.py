"""The debounce rule of the live map, with no I/O: which ping of each vehicle to write, and when.

Per vehicle, the newest ping by event time (``recorded_at``) wins; an older or equal one is dropped
at once. The first ping of an interval is due immediately; pings that arrive while the vehicle was
written less than ``interval_s`` ago wait, and only the newest of them is written when the interval
ends. So a vehicle costs at most one document write per interval however fast it pings, and a
late or out-of-order ping can never move its marker backwards.

Every offered ping carries an opaque ``receipt`` (the Pub/Sub ack id): the debouncer says when a
receipt may be acknowledged, which is only once the ping is written or superseded by a newer one
that is itself still unacknowledged (so a crash redelivers the newer one, never loses the newest).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from meridian.domain.events import VehiclePing

R = TypeVar("R")

DEFAULT_INTERVAL_S = 2.0


class Position(NamedTuple):
    """Where a vehicle was at ``recorded_at`` (the event time), as the map shows it.

    Immutable like a frozen dataclass, but built in half the time: one is built per ping, 5,000
    a second at the peak."""

    vehicle_id: str
    lat: float
    lng: float
    recorded_at: datetime
    heading_deg: float | None = None
    speed_mps: float | None = None
    accuracy_m: float | None = None

    @classmethod
    def of(cls, ping: VehiclePing) -> Position:
        return cls(
            vehicle_id=ping.vehicle_id,
            lat=ping.lat,
            lng=ping.lng,
            recorded_at=ping.recorded_at,
            heading_deg=ping.heading_deg,
            speed_mps=ping.speed_mps,
            accuracy_m=ping.accuracy_m,
        )

    def document(self, written_at: datetime) -> dict[str, Any]:
        """The ``live_map/{vehicle}`` document. No driver id: customers may read this document."""
        return {
            "vehicle_id": self.vehicle_id,
            "lat": self.lat,
            "lng": self.lng,
            "heading_deg": self.heading_deg,
            "speed_mps": self.speed_mps,
            "accuracy_m": self.accuracy_m,
            "recorded_at": self.recorded_at,
            "written_at": written_at,
        }


@dataclass
class _Vehicle(Generic[R]):
    newest: datetime
    last_written: float | None = None  # monotonic seconds of the last write taken
    pending: tuple[Position, R] | None = None
    scheduled: bool = False


@dataclass
class Debouncer(Generic[R]):
    """Holds, per vehicle, the newest unwritten position; ``now`` is monotonic seconds."""

    interval_s: float = DEFAULT_INTERVAL_S
    _vehicles: dict[str, _Vehicle[R]] = field(default_factory=dict)
    _due: list[tuple[float, str]] = field(default_factory=list)

    def offer(self, position: Position, receipt: R, now: float) -> list[R]:
        """Take a ping; returns the receipts that may be acknowledged now (the ping itself when
        it is stale, or the pending ping it supersedes)."""
        vehicle = self._vehicles.get(position.vehicle_id)
        if vehicle is None:
            vehicle = self._vehicles[position.vehicle_id] = _Vehicle(position.recorded_at)
        elif position.recorded_at <= vehicle.newest:
            return [receipt]  # a duplicate or an out-of-order ping: the marker never goes back
        vehicle.newest = position.recorded_at
        released = [vehicle.pending[1]] if vehicle.pending is not None else []
        vehicle.pending = (position, receipt)
        if not vehicle.scheduled:
            due = now if vehicle.last_written is None else vehicle.last_written + self.interval_s
            heapq.heappush(self._due, (max(due, now), position.vehicle_id))
            vehicle.scheduled = True
        return released

    def take_due(self, now: float) -> list[tuple[Position, R]]:
        """The positions to write now; each vehicle's interval restarts at ``now``."""
        taken = []
        while self._due and self._due[0][0] <= now:
            _, vehicle_id = heapq.heappop(self._due)
            vehicle = self._vehicles[vehicle_id]
            vehicle.scheduled = False
            if vehicle.pending is not None:
                taken.append(vehicle.pending)
                vehicle.pending = None
                vehicle.last_written = now
        return taken

    def give_back(self, items: list[tuple[Position, R]], retry_at: float) -> list[R]:
        """A write failed: put its positions back (due at ``retry_at``) unless a newer one
        arrived meanwhile; returns the receipts of those superseded, which may be acknowledged."""
        released = []
        for position, receipt in items:
            vehicle = self._vehicles[position.vehicle_id]
            if vehicle.pending is not None:
                released.append(receipt)  # the newer pending ping will be written instead
                continue
            vehicle.pending = (position, receipt)
            if not vehicle.scheduled:
                heapq.heappush(self._due, (retry_at, position.vehicle_id))
                vehicle.scheduled = True
        return released

    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    def pending_count(self) -> int:
        return sum(1 for v in self._vehicles.values() if v.pending is not None)
