"""Fleet simulator: vehicles driving between stops, pinging like driver apps do.

Each vehicle drives straight legs between random stops around a depot at an urban speed, dwells
at each stop, and pings every ``ping_interval_s`` (phases spread so the fleet's load is even) with
GPS noise. Like real phones, some pings are sent twice, some arrive late (after newer ones) and
some batches arrive out of order. The pings of one tick go out in batches of at most 500 to a
``Sink``: ``HttpSink`` posts them to ``/v1/telemetry`` as a fleet gateway would (``meridian sim``,
the map's browser tests), and the live-map benchmark publishes them straight to the telemetry
topic.

A ping is stamped (``recorded_at``) when its tick runs, so a tick delays no ping past its stamp;
what the sink spends sending the tick's pings does count in their age, as a phone's upload would.
A vehicle is moved only when it pings (over the time since its last ping), so a tick costs in
proportion to its pings, not to the fleet: the benchmark ticks every 0.1 s through 8,200 vehicles.

``RouteFleet`` drives planned routes instead of random stops (``meridian demo``: the vehicles of a
dispatched window, each stop reported as it is reached).

Used by ``meridian sim`` (``meridian/runtime/sim_cli.py``), ``meridian demo`` and the live-map benchmark.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

EARTH_M = 6_371_000.0
BATCH = 500  # the command service's limit per request
NOISE_M = 6.0


@dataclass(frozen=True)
class SimOptions:
    vehicles: int = 300
    ping_interval_s: float = 5.0
    center: tuple[float, float] = (12.9716, 77.5946)  # Bengaluru
    radius_km: float = 8.0
    duplicate_rate: float = 0.01
    late_rate: float = 0.01
    reorder_rate: float = 0.02
    seed: int = 7
    prefix: str = "veh"


def vehicle_id(index: int, prefix: str = "veh") -> str:
    return f"{prefix}-{index:05d}"


def offset(lat: float, lng: float, north_m: float, east_m: float) -> tuple[float, float]:
    dlat = math.degrees(north_m / EARTH_M)
    dlng = math.degrees(east_m / (EARTH_M * math.cos(math.radians(lat))))
    return lat + dlat, lng + dlng


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = math.radians(b[0] - a[0]) * EARTH_M
    east = math.radians(b[1] - a[1]) * EARTH_M * math.cos(math.radians(a[0]))
    return math.hypot(north, east)


def _heading(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = b[0] - a[0]
    east = (b[1] - a[1]) * math.cos(math.radians(a[0]))
    return math.degrees(math.atan2(east, north)) % 360


@dataclass
class SimVehicle:
    vehicle_id: str
    position: tuple[float, float]
    target: tuple[float, float]
    cruise_mps: float
    next_ping: float  # simulation seconds
    driven_to: float = 0.0  # simulation time its position is at
    dwell_s: float = 0.0
    speed_mps: float = 0.0
    heading_deg: float = 0.0


@dataclass
class Fleet:
    """The simulated fleet; ``advance(t)`` moves it to simulation time ``t`` (seconds) and
    returns the pings due by then, stamped with ``now``."""

    options: SimOptions
    vehicles: list[SimVehicle] = field(default_factory=list)
    clock: float = 0.0
    _held: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _next: list[tuple[float, int]] = field(default_factory=list)  # (next ping, index): a heap

    def __post_init__(self) -> None:
        self.rng = random.Random(self.options.seed)
        for index in range(self.options.vehicles):
            self.vehicles.append(
                SimVehicle(
                    vehicle_id=vehicle_id(index, self.options.prefix),
                    position=self._random_stop(),
                    target=self._random_stop(),
                    cruise_mps=self.rng.uniform(6.0, 13.0),  # 22 to 47 km/h in town
                    next_ping=self.rng.uniform(0, self.options.ping_interval_s),
                )
            )
        self._next = [(v.next_ping, index) for index, v in enumerate(self.vehicles)]
        heapq.heapify(self._next)

    def _random_stop(self) -> tuple[float, float]:
        radius = self.options.radius_km * 1000 * math.sqrt(self.rng.random())
        angle = self.rng.uniform(0, 2 * math.pi)
        return offset(*self.options.center, radius * math.cos(angle), radius * math.sin(angle))

    def _drive(self, vehicle: SimVehicle, seconds: float) -> None:
        while seconds > 0:
            if vehicle.dwell_s > 0:  # handing over a parcel
                waited = min(seconds, vehicle.dwell_s)
                vehicle.dwell_s -= waited
                seconds -= waited
                vehicle.speed_mps = 0.0
                continue
            remaining = distance_m(vehicle.position, vehicle.target)
            vehicle.speed_mps = vehicle.cruise_mps * self.rng.uniform(0.85, 1.15)
            vehicle.heading_deg = _heading(vehicle.position, vehicle.target)
            step = vehicle.speed_mps * seconds
            if step < remaining:
                frac = step / remaining
                vehicle.position = (
                    vehicle.position[0] + (vehicle.target[0] - vehicle.position[0]) * frac,
                    vehicle.position[1] + (vehicle.target[1] - vehicle.position[1]) * frac,
                )
                return
            seconds -= remaining / vehicle.speed_mps
            vehicle.position = vehicle.target
            self._arrive(vehicle)

    def _arrive(self, vehicle: SimVehicle) -> None:
        """The vehicle is at its target: hand over, then head for the next stop."""
        vehicle.target = self._random_stop()
        vehicle.dwell_s = self.rng.uniform(30, 120)

    def _ping(self, vehicle: SimVehicle, now: datetime) -> dict[str, Any]:
        lat, lng = offset(*vehicle.position, self.rng.gauss(0, NOISE_M), self.rng.gauss(0, NOISE_M))
        return {
            "vehicle_id": vehicle.vehicle_id,
            "position": {"lat": round(lat, 7), "lng": round(lng, 7)},
            "recorded_at": now.isoformat(),
            "heading_deg": round(vehicle.heading_deg, 1) % 360,
            "speed_mps": round(vehicle.speed_mps, 2),
            "accuracy_m": round(abs(self.rng.gauss(NOISE_M, 2)), 1),
        }

    def advance(self, to: float, now: datetime) -> list[dict[str, Any]]:
        self.clock = to
        pings: list[dict[str, Any]] = []
        schedule = self._next
        while schedule and schedule[0][0] <= to:
            _, index = heapq.heappop(schedule)
            vehicle = self.vehicles[index]
            self._drive(vehicle, to - vehicle.driven_to)
            vehicle.driven_to = to
            # A late tick sends one ping per vehicle, however many it missed.
            while vehicle.next_ping <= to:
                vehicle.next_ping += self.options.ping_interval_s
            heapq.heappush(schedule, (vehicle.next_ping, index))
            ping = self._ping(vehicle, now)
            roll = self.rng.random()
            if roll < self.options.late_rate:
                # Held back (a phone out of coverage) and sent after newer pings.
                self._held.append((to + self.rng.uniform(6, 20), ping))
                continue
            pings.append(ping)
            if roll < self.options.late_rate + self.options.duplicate_rate:
                pings.append(dict(ping))  # a retried upload
        released = [p for due, p in self._held if due <= to]
        self._held = [(due, p) for due, p in self._held if due > to]
        pings.extend(released)
        if pings and self.rng.random() < self.options.reorder_rate:
            self.rng.shuffle(pings)
        return pings


@dataclass(frozen=True)
class SimRoute:
    """A vehicle's planned stops, driven in order from ``start`` (its depot)."""

    vehicle_id: str
    start: tuple[float, float]
    stops: tuple[tuple[float, float], ...]
    cruise_mps: float = 60.0


@dataclass
class RouteFleet(Fleet):
    """Vehicles driving planned routes (``meridian demo``'s): each drives its stops in order,
    dwells ``dwell_s`` at each, then drives back to its start and parks there. ``arrivals``
    collects ``(vehicle id, stop index)`` as vehicles reach their stops, for the caller to act
    on (a driver delivering); ``options.vehicles`` is ignored, the routes are the fleet."""

    routes: Sequence[SimRoute] = ()
    dwell_s: float = 1.0
    arrivals: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.options.seed)
        self._plans = {route.vehicle_id: route for route in self.routes}
        self._reached: dict[str, int] = {}
        for route in self.routes:
            self.vehicles.append(
                SimVehicle(
                    vehicle_id=route.vehicle_id,
                    position=route.start,
                    target=route.stops[0] if route.stops else route.start,
                    cruise_mps=route.cruise_mps,
                    next_ping=self.rng.uniform(0, self.options.ping_interval_s),
                )
            )
        self._next = [(v.next_ping, index) for index, v in enumerate(self.vehicles)]
        heapq.heapify(self._next)

    def _arrive(self, vehicle: SimVehicle) -> None:
        plan = self._plans[vehicle.vehicle_id]
        reached = self._reached.get(vehicle.vehicle_id, 0)
        if reached < len(plan.stops):
            self.arrivals.append((vehicle.vehicle_id, reached))
            self._reached[vehicle.vehicle_id] = reached + 1
            vehicle.dwell_s = self.dwell_s
            following = plan.stops[reached + 1 : reached + 2]
            vehicle.target = following[0] if following else plan.start
        else:  # back at the depot: parked for the rest of the run
            vehicle.dwell_s = math.inf


class Sink(abc.ABC):
    """Where a tick's pings go."""

    @abc.abstractmethod
    async def send(self, pings: Sequence[dict[str, Any]]) -> int:
        """Send the pings; returns how many were accepted."""

    async def close(self) -> None:  # noqa: B027  # optional for sinks holding no resources
        pass


class HttpSink(Sink):
    """Posts to the command service's ``/v1/telemetry``. ``token_for(group)`` gives the token a
    group of vehicles' pings are posted with: the simulator stands in for a fleet gateway (a
    driver may report only the vehicle they drive, and the simulated vehicles have no drivers),
    so a gateway's or the desk's token; vehicles are grouped so 300 vehicles are not 60 requests
    a second on a laptop."""

    def __init__(
        self, base_url: str, token_for: Callable[[int], str], group_size: int = 50
    ) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.token_for = token_for
        self.group_size = group_size
        self.rejected = 0
        self.failed = 0

    def _group(self, ping: dict[str, Any]) -> int:
        suffix = ping["vehicle_id"].rsplit("-", 1)[-1]
        if suffix.isdigit():  # the simulator's own ids: consecutive vehicles share a token
            return int(suffix) // self.group_size
        return zlib.crc32(suffix.encode()) % 64

    async def send(self, pings: Sequence[dict[str, Any]]) -> int:
        groups: dict[int, list[dict[str, Any]]] = {}
        for ping in pings:
            groups.setdefault(self._group(ping), []).append(ping)
        requests = []
        for group, members in groups.items():
            for start in range(0, len(members), BATCH):
                requests.append(self._post(group, members[start : start + BATCH]))
        return sum(await asyncio.gather(*requests))

    async def _post(self, group: int, pings: list[dict[str, Any]]) -> int:
        try:
            response = await self.client.post(
                "/v1/telemetry",
                json={"pings": pings},
                headers={"Authorization": f"Bearer {self.token_for(group)}"},
            )
        except httpx.HTTPError:
            self.failed += len(pings)
            return 0
        if response.status_code != 202:
            self.failed += len(pings)
            return 0
        body = response.json()
        self.rejected += len(body.get("rejected", []))
        return int(body.get("accepted", 0))

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class SimReport:
    ticks: int = 0
    sent: int = 0
    accepted: int = 0
    behind_s: float = 0.0  # how far the simulator fell behind real time at worst


async def run_fleet(
    fleet: Fleet,
    sink: Sink,
    duration_s: float,
    tick_s: float = 1.0,
    on_tick: Callable[[SimReport], None] | None = None,
) -> SimReport:
    """Drive the fleet in real time for ``duration_s`` (forever if ≤ 0).

    The duration is wall-clock time: a simulator that falls behind (a busy machine) offers less
    (a late tick still sends at most one ping per vehicle; ``behind_s`` says how late it got)
    and stops on time rather than running on to catch up, so whoever measures a fixed window
    gets that window."""
    report = SimReport()
    started = time.monotonic()
    tick = 0
    while duration_s <= 0 or (
        tick * tick_s < duration_s and time.monotonic() - started < duration_s
    ):
        tick += 1
        wake = started + tick * tick_s
        delay = wake - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            report.behind_s = max(report.behind_s, -delay)
        now = datetime.now(UTC)
        pings = fleet.advance(time.monotonic() - started, now)
        report.ticks += 1
        report.sent += len(pings)
        if pings:
            report.accepted += await sink.send(pings)
        if on_tick is not None:
            on_tick(report)
    return report


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def age_s(recorded_at: str, now: datetime | None = None) -> float:
    """Seconds since a ping's ``recorded_at``."""
    return ((now or datetime.now(UTC)) - parse_time(recorded_at)) / timedelta(seconds=1)
