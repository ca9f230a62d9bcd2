"""Per-vehicle fence and idle tracking, in event time, with no Beam in sight.

The Beam DoFn (``transforms.TrackVehicles``) keeps one ``VehicleState`` per vehicle and calls
``add`` for each arriving ping and ``advance`` when the watermark has passed the buffered pings:
pings are applied strictly in event-time order, so late or out-of-order pings that arrive before
the watermark passes them give exactly the events in-order input gives. A ping older than the
last applied one can no longer be ordered and is dropped (it never flips state).

Hysteresis: a vehicle enters a fence when inside the fence shrunk by its margin, and leaves it
when outside the fence grown by the margin. Confirmation: the new side must hold for
``confirm_pings`` consecutive pings or ``confirm_seconds``, whichever comes first, so GPS jitter
at an edge produces no events. The event carries the time and place of the first ping of the
confirmed run (when the crossing happened), not of the ping that confirmed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from meridian.domain.events import (
    GeofenceCrossed,
    GeofenceDirection,
    VehicleIdle,
    derive_event_id,
)
from pipelines.geofence.model import Located, Ping

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class TrackerConfig:
    confirm_pings: int = 2
    confirm_seconds: float = 10.0
    idle_radius_m: float = 30.0
    idle_after_s: float = 300.0
    max_speed_mps: float = 70.0


@dataclass
class Streak:
    """A run of pings on the other side of a fence's edge, not yet confirmed."""

    start_ts: float
    lat: float
    lng: float
    count: int = 1


@dataclass
class VehicleState:
    vehicle_id: str = ""
    pending: dict[str, Located] = field(default_factory=dict)
    last_ts: float = -math.inf
    last_lat: float = 0.0
    last_lng: float = 0.0
    last_id: str = ""  # a re-sent ping is never newer than the state: this only names the drop
    inside: dict[str, float] = field(default_factory=dict)  # fence id → time it was entered
    entering: dict[str, Streak] = field(default_factory=dict)
    leaving: dict[str, Streak] = field(default_factory=dict)
    anchor: tuple[float, float, float] | None = None  # (ts, lat, lng) where it last stood still
    idle_reported: bool = False
    flush_at: float | None = None  # when the buffered pings are to be applied (set by the Beam step)

    @property
    def next_idle_check(self) -> float | None:
        if self.anchor is None or self.idle_reported:
            return None
        return self.anchor[0]

    def due(self, config: TrackerConfig) -> float | None:
        """The earliest event time at which ``advance`` has something to do: buffered pings to
        apply (from ``flush_at``) or an idle deadline to check."""
        check = self.next_idle_check
        deadline = None if check is None else check + config.idle_after_s
        if self.flush_at is None or deadline is None:
            return self.flush_at if deadline is None else deadline
        return min(self.flush_at, deadline)


_STATE_FIELDS = tuple(f.name for f in fields(VehicleState))
_ENCODED_FIELDS = (
    "vehicle_id", "pending", "last_ts", "last_lat", "last_lng", "last_id", "inside",
    "entering", "leaving", "anchor", "idle_reported", "flush_at",
)  # fmt: skip
# A field added to VehicleState must be added to ``encode_state``/``decode_state`` too.
assert _STATE_FIELDS == _ENCODED_FIELDS, "VehicleState changed: update encode_state/decode_state"
_new_tuple = tuple.__new__


def encode_state(s: VehicleState) -> tuple[Any, ...]:
    """A vehicle's state as plain tuples, dicts, strings and numbers, for ``marshal``.

    The Beam step stores every vehicle's state each time its shard is touched; pickling the
    dataclasses and NamedTuples calls Python code per object (``__reduce_ex__``,
    ``__getnewargs__``), and that was about a quarter of the job's time. Plain values marshal
    in C. ``decode_state`` is the inverse; a round trip gives an equal state.
    """
    return (
        s.vehicle_id,
        tuple((tuple(loc.ping), loc.inner, loc.outer, loc.known) for loc in s.pending.values()),
        s.last_ts,
        s.last_lat,
        s.last_lng,
        s.last_id,
        s.inside,
        _streaks_out(s.entering),
        _streaks_out(s.leaving),
        s.anchor,
        s.idle_reported,
        s.flush_at,
    )


def decode_state(t: tuple[Any, ...]) -> VehicleState:
    vehicle, pending, last_ts, last_lat, last_lng, last_id, inside, entering, leaving, *rest = t
    anchor, idle_reported, flush_at = rest
    return VehicleState(
        vehicle,
        {  # tuple.__new__ builds the NamedTuples without their Python-level __new__
            p[1]: _new_tuple(Located, (_new_tuple(Ping, p), inner, outer, known))
            for p, inner, outer, known in pending
        },
        last_ts,
        last_lat,
        last_lng,
        last_id,
        inside,
        _streaks_in(entering),
        _streaks_in(leaving),
        anchor,
        idle_reported,
        flush_at,
    )


def _streaks_out(streaks: dict[str, Streak]) -> dict[str, tuple[float, float, float, int]] | None:
    if not streaks:
        return None
    return {k: (v.start_ts, v.lat, v.lng, v.count) for k, v in streaks.items()}


def _streaks_in(raw: dict[str, tuple[float, float, float, int]] | None) -> dict[str, Streak]:
    return {k: Streak(*v) for k, v in raw.items()} if raw else {}


def add(state: VehicleState, located: Located) -> str | None:
    """Buffer a ping; returns "duplicate" or "late" when it is dropped instead."""
    ping = located.ping
    if ping.event_id in state.pending or ping.event_id == state.last_id:
        return "duplicate"
    if ping.ts <= state.last_ts:
        return "late"
    state.pending[ping.event_id] = located
    return None


def pending_until(state: VehicleState) -> float | None:
    """The event time up to which buffered pings are waiting for the watermark."""
    return max((loc.ping.ts for loc in state.pending.values()), default=None)


def advance(
    state: VehicleState, upto: float, config: TrackerConfig
) -> tuple[list[GeofenceCrossed | VehicleIdle], list[tuple[Ping, str]]]:
    """Apply buffered pings with time ≤ ``upto`` in event-time order, then check for idleness
    at ``upto``. Returns the events and the pings rejected as physically impossible.

    Idleness is also checked just before each ping, at the ping's time: when a flush applies
    minutes of pings at once (a backlog, a batch replay), a vehicle that stood still for the
    timeout and then moved is reported exactly as when a timer fired in between, so the events
    do not depend on how pings were batched or when the watermark moved."""
    due = sorted((loc for loc in state.pending.values() if loc.ping.ts <= upto), key=_order)
    events: list[GeofenceCrossed | VehicleIdle] = []
    rejected: list[tuple[Ping, str]] = []
    for located in due:
        del state.pending[located.ping.event_id]
        reason = _impossible(state, located.ping, config)
        if reason:
            rejected.append((located.ping, reason))
            continue
        # Strictly before the ping: a ping exactly at the timeout is applied first, as the
        # timer at that time would have applied it before checking.
        idle = check_idle(state, math.nextafter(located.ping.ts, -math.inf), config)
        if idle is not None:
            events.append(idle)
        events.extend(_apply(state, located, config))
    idle = check_idle(state, upto, config)
    if idle is not None:
        events.append(idle)
    return events, rejected


def check_idle(state: VehicleState, now: float, config: TrackerConfig) -> VehicleIdle | None:
    """VehicleIdle once, when the vehicle has stayed within the radius for ``idle_after_s``."""
    if state.anchor is None or state.idle_reported:
        return None
    since, lat, lng = state.anchor
    if now < since + config.idle_after_s:  # the same sum as the deadline a timer is set for
        return None
    state.idle_reported = True
    vehicle = state.vehicle_id
    return VehicleIdle(
        event_id=derive_event_id("VehicleIdle", vehicle, _iso(since)),
        occurred_at=_dt(since + config.idle_after_s),
        vehicle_id=vehicle,
        idle_since=_dt(since),
        lat=lat,
        lng=lng,
        radius_m=config.idle_radius_m,
        idle_seconds=config.idle_after_s,
    )


# ---------------------------------------------------------------------------------------------


def _order(located: Located) -> tuple[float, str]:
    return (located.ping.ts, located.ping.event_id)


def _impossible(state: VehicleState, ping: Ping, config: TrackerConfig) -> str | None:
    if state.last_ts == -math.inf:
        return None
    dt = ping.ts - state.last_ts
    moved = distance_m(state.last_lat, state.last_lng, ping.lat, ping.lng)
    if moved > config.max_speed_mps * max(dt, 1.0):
        implied = moved / max(dt, 1e-3)
        return f"implied speed {implied:.0f} m/s since the previous ping exceeds {config.max_speed_mps:.0f}"
    return None


def _apply(state: VehicleState, located: Located, config: TrackerConfig) -> list[GeofenceCrossed]:
    ping = located.ping
    state.last_ts, state.last_lat, state.last_lng = ping.ts, ping.lat, ping.lng
    state.last_id = ping.event_id
    state.vehicle_id = ping.vehicle_id
    _move_anchor(state, ping, config)
    if not located.known:
        return []  # no fence snapshot for this time: we know where it is, not what it is in
    events = []
    for fence_id in set(state.entering) - located.inner:
        del state.entering[fence_id]
    for fence_id in located.inner - state.inside.keys():
        streak = state.entering.get(fence_id)
        if streak is None:
            streak = state.entering[fence_id] = Streak(ping.ts, ping.lat, ping.lng, 0)
        streak.count += 1
        if _confirmed(streak, ping.ts, config):
            del state.entering[fence_id]
            state.inside[fence_id] = streak.start_ts
            events.append(
                _crossed(
                    ping.vehicle_id,
                    fence_id,
                    GeofenceDirection.ENTER,
                    streak,
                    ping.ts - streak.start_ts,
                )
            )
    for fence_id in list(state.leaving):
        if fence_id in located.outer or fence_id not in state.inside:
            del state.leaving[fence_id]
    for fence_id in list(state.inside.keys() - located.outer):
        streak = state.leaving.get(fence_id)
        if streak is None:
            streak = state.leaving[fence_id] = Streak(ping.ts, ping.lat, ping.lng, 0)
        streak.count += 1
        if _confirmed(streak, ping.ts, config):
            del state.leaving[fence_id]
            entered = state.inside.pop(fence_id)
            events.append(
                _crossed(
                    ping.vehicle_id,
                    fence_id,
                    GeofenceDirection.EXIT,
                    streak,
                    streak.start_ts - entered,
                )
            )
    return events


def _confirmed(streak: Streak, now: float, config: TrackerConfig) -> bool:
    return streak.count >= config.confirm_pings or now - streak.start_ts >= config.confirm_seconds


def _move_anchor(state: VehicleState, ping: Ping, config: TrackerConfig) -> None:
    if state.anchor is not None:
        _, lat, lng = state.anchor
        if distance_m(lat, lng, ping.lat, ping.lng) <= config.idle_radius_m:
            return
    # It moved (or is seen for the first time): idleness starts over from here.
    state.anchor = (ping.ts, ping.lat, ping.lng)
    state.idle_reported = False


def _crossed(
    vehicle: str, fence_id: str, direction: GeofenceDirection, streak: Streak, dwell: float
) -> GeofenceCrossed:
    return GeofenceCrossed(
        event_id=derive_event_id(
            "GeofenceCrossed", vehicle, fence_id, direction.value, _iso(streak.start_ts)
        ),
        occurred_at=_dt(streak.start_ts),
        vehicle_id=vehicle,
        geofence_id=fence_id,
        direction=direction,
        crossed_at=_dt(streak.start_ts),
        lat=streak.lat,
        lng=streak.lng,
        dwell_seconds=max(dwell, 0.0),
    )


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Haversine distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _iso(ts: float) -> str:
    return _dt(ts).isoformat()
