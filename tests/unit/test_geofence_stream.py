"""The geofence job in event time, driven by one Beam TestStream (Beam is slow to start, so every
scenario runs in the same pipeline, each with its own vehicles, and is asserted separately)."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream as EventTimeStream
from apache_beam.transforms.window import TimestampedValue
from shapely.geometry import box

from meridian.domain.events import GeofenceCrossed, VehicleIdle
from pipelines.geofence.fences import METRES_PER_DEGREE, Geofence, snapshot
from pipelines.geofence.model import Ping, Rejected
from pipelines.geofence.tracking import TrackerConfig
from pipelines.geofence.transforms import BatchPings, Detect, DetectSettings, EncodeEvents

T0 = 1_714_550_400.0  # 2024-05-01T08:00:00Z
LAT0, LNG0 = 52.0, 13.0
DEG_PER_M = 1 / METRES_PER_DEGREE  # of latitude
FENCE = Geofence("depot", box(LNG0 - 0.005, LAT0 - 0.005, LNG0 + 0.005, LAT0 + 0.005), margin_m=20)
EDGE_LAT = LAT0 + 0.005  # the north edge
LATE_FENCE = Geofence("yard", box(LNG0 + 0.1, LAT0 - 0.005, LNG0 + 0.11, LAT0 + 0.005), margin_m=20)
FENCE_ADDED_AT = T0 + 600

CONFIG = TrackerConfig(confirm_pings=2, confirm_seconds=30, idle_radius_m=30, idle_after_s=300)
SINK: dict[str, list[Any]] = defaultdict(list)
LOCK = threading.Lock()


def ping(
    vehicle: str, t: float, lat: float, lng: float = LNG0, n: int | None = None, **kw: Any
) -> Ping:
    return Ping(vehicle, f"{vehicle}-{n if n is not None else t}", T0 + t, lat, lng, **kw)


def north_to_south(vehicle: str, start: float = 0) -> list[Ping]:
    """Drive south through the depot: from 300 m north of it to 300 m south, a ping per 10 s."""
    path = []
    lat = EDGE_LAT + 300 * DEG_PER_M
    for i in range(60):
        path.append(ping(vehicle, start + 10 * i, lat))
        lat -= 25 * DEG_PER_M  # 2.5 m/s
    return path


def jitter(vehicle: str) -> list[Ping]:
    """Parked north of the depot, GPS wandering ±15 m across the edge (margin 20 m)."""
    return [ping(vehicle, 5 * i, EDGE_LAT + (15 if i % 2 else -15) * DEG_PER_M) for i in range(40)]


def scenarios() -> dict[str, list[Ping]]:
    in_order = north_to_south("in-order")
    shuffled = north_to_south("shuffled")
    # Swap neighbours and hold some back by up to 20 s: still within the allowed lateness.
    for i in range(0, len(shuffled) - 1, 2):
        shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    shuffled = shuffled[3:][:2] + shuffled[:3] + shuffled[5:]
    duplicated = [p for p in north_to_south("duplicated") for _ in range(2)]
    idle = [
        ping("idler", 10 * i, LAT0 + 0.02, LNG0 + 0.02 + (i % 3) * DEG_PER_M) for i in range(40)
    ]
    idle += [
        ping("idler", 400 + 10 * i, LAT0 + 0.02 + 100 * i * DEG_PER_M, LNG0 + 0.02)
        for i in range(1, 4)
    ]
    # Drives through the yard twice, from 220 m north of it to 280 m south: before the yard
    # exists (no events), and after it was added.
    added = []
    for lap, start in enumerate((0, 900)):
        for i in range(30):
            added.append(
                ping(
                    "lapper",
                    start + 10 * i,
                    LAT0 + 0.007 - 0.0005 * i,
                    LNG0 + 0.105,
                    n=lap * 100 + i,
                )
            )
    bad = [
        ping("bad", 0, 91.0),
        ping("bad", 1, LAT0, speed_mps=400.0),
        ping("bad", 2, 0.0, 0.0),
        Ping("bad", "bad-future", T0 + 10 * 86400 * 365 * 10, LAT0, LNG0),
        ping("teleport", 0, LAT0 + 0.5),
        ping("teleport", 10, LAT0 - 0.5),
    ]
    return {
        "in-order": in_order,
        "shuffled": shuffled,
        "duplicated": duplicated,
        "jitter": jitter("jitter"),
        "idler": idle,
        "lapper": added,
        "bad": bad,
    }


class Collect(beam.DoFn):
    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, element: Any) -> None:
        with LOCK:
            SINK[self.name].append(element)


class CollectEventTimes(beam.DoFn):
    """The event time each event was emitted at (the timer that released it)."""

    def process(self, event: Any, at: Any = beam.DoFn.TimestampParam) -> None:
        with LOCK:
            SINK["emitted_at"].append((event.event_id, float(at.micros) / 1e6))


@pytest.fixture(scope="module")
def outputs() -> dict[str, list[Any]]:
    SINK.clear()
    pings = [p for group in scenarios().values() for p in group]
    # Arrival: in 30 s steps of event time, the watermark 30 s behind; within a step each
    # vehicle's pings keep their list order (which is how "shuffled" and "duplicated" arrive).
    # One TestStream event per 30 s step (the runner handles each event separately, slowly).
    steps: dict[int, list[Ping]] = defaultdict(list)
    for p in pings:
        steps[int(min(p.ts - T0, 3000) // 30)].append(p)
    stream = EventTimeStream()
    for step in sorted(steps):
        horizon = T0 + 30 * step - 30
        stream = stream.add_elements([TimestampedValue(p, max(p.ts, horizon)) for p in steps[step]])
        stream = stream.advance_watermark_to(horizon)
    stream = stream.advance_watermark_to(T0 + 3000).advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    settings = DetectSettings(tracker=CONFIG)
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        # The fence side-input stream: the depot from the start, the yard added at 600 s.
        fences = p | "Fences" >> beam.Create(
            [snapshot([FENCE]), snapshot([FENCE, LATE_FENCE], FENCE_ADDED_AT)]
        )
        events, dead = p | stream | beam.ParDo(BatchPings()) | Detect(settings, fences)
        events | "CollectEvents" >> beam.ParDo(Collect("events"))
        events | "CollectEventTimes" >> beam.ParDo(CollectEventTimes())
        events | beam.ParDo(EncodeEvents()) | "CollectMessages" >> beam.ParDo(Collect("messages"))
        dead | "CollectDead" >> beam.ParDo(Collect("dead"))
    return dict(SINK)


def crossings(outputs: dict[str, list[Any]], vehicle: str) -> list[tuple[str, str, float]]:
    return sorted(
        (e.geofence_id, e.direction.value, e.crossed_at.timestamp() - T0)
        for e in outputs["events"]
        if isinstance(e, GeofenceCrossed) and e.vehicle_id == vehicle
    )


def test_a_vehicle_driving_through_a_fence_enters_then_exits(outputs: dict[str, list[Any]]) -> None:
    got = crossings(outputs, "in-order")
    assert [(f, d) for f, d, _ in sorted(got, key=lambda c: c[2])] == [
        ("depot", "ENTER"),
        ("depot", "EXIT"),
    ]
    enter = next(c for c in got if c[1] == "ENTER")
    # Entered at the first ping inside the shrunk fence (20 m margin): 300 m + 20 m → ~130 s.
    assert 120 <= enter[2] <= 140
    exit_event = next(
        e
        for e in outputs["events"]
        if isinstance(e, GeofenceCrossed)
        and e.vehicle_id == "in-order"
        and e.direction.value == "EXIT"
    )
    assert exit_event.dwell_seconds > 300


def test_crossings_are_released_while_the_vehicle_is_still_pinging(
    outputs: dict[str, list[Any]],
) -> None:
    # The vehicle pings every 10 s for 590 s; its entry at ~130 s must come out within a minute
    # of event time (two 30 s arrival steps), not only once it stops pinging.
    emitted = dict(outputs["emitted_at"])
    entered = [
        e
        for e in outputs["events"]
        if isinstance(e, GeofenceCrossed)
        and e.vehicle_id == "in-order"
        and e.direction.value == "ENTER"
    ]
    assert len(entered) == 1
    assert emitted[entered[0].event_id] - entered[0].crossed_at.timestamp() <= 70


def test_jitter_across_an_edge_within_the_margin_gives_no_events(
    outputs: dict[str, list[Any]],
) -> None:
    assert crossings(outputs, "jitter") == []


def test_out_of_order_pings_give_the_same_events_as_in_order_ones(
    outputs: dict[str, list[Any]],
) -> None:
    assert crossings(outputs, "shuffled") == crossings(outputs, "in-order")


def test_duplicate_pings_give_no_duplicate_events(outputs: dict[str, list[Any]]) -> None:
    assert crossings(outputs, "duplicated") == crossings(outputs, "in-order")
    ids = [e.event_id for e in outputs["events"]]
    assert len(ids) == len(set(ids))


def idle_since(outputs: dict[str, list[Any]], vehicle: str) -> list[float]:
    return sorted(
        e.idle_since.timestamp() - T0
        for e in outputs["events"]
        if isinstance(e, VehicleIdle) and e.vehicle_id == vehicle
    )


def test_a_vehicle_standing_still_is_idle_once_after_the_timeout(
    outputs: dict[str, list[Any]],
) -> None:
    # Stands still from its first ping for 400 s (40 pings, ±2 m): idle once, from T0, and not
    # again while it keeps standing; it then drives off and goes quiet at 430 s: idle from there.
    assert idle_since(outputs, "idler") == [0, 430]
    first = min(
        (e for e in outputs["events"] if isinstance(e, VehicleIdle) and e.vehicle_id == "idler"),
        key=lambda e: e.idle_since,
    )
    assert first.idle_seconds == 300
    assert first.occurred_at.timestamp() == T0 + 300
    # A vehicle that kept moving is idle only once it stopped reporting: its last move of more
    # than the 30 m radius was at 580 s (the ping at 590 s is 25 m on, within the radius).
    assert idle_since(outputs, "in-order") == [580]
    assert idle_since(outputs, "shuffled") == idle_since(outputs, "duplicated") == [580]


def test_a_fence_added_while_running_takes_effect(outputs: dict[str, list[Any]]) -> None:
    got = crossings(outputs, "lapper")
    assert [(f, d) for f, d, _ in got] == [("yard", "ENTER"), ("yard", "EXIT")]
    assert all(t >= FENCE_ADDED_AT - T0 for _, _, t in got)


def test_bad_pings_are_dead_lettered_with_a_reason(outputs: dict[str, list[Any]]) -> None:
    dead: list[Rejected] = outputs["dead"]
    reasons = sorted(r.reason.split(" ")[0] for r in dead)
    assert len([r for r in dead if dict(r.attributes).get("vehicleId") == "bad"]) == 4
    assert any("implied speed" in r.reason for r in dead), reasons
    assert not crossings(outputs, "bad")


def test_events_are_encoded_with_the_catalog_attributes(outputs: dict[str, list[Any]]) -> None:
    messages = outputs["messages"]
    assert len(messages) == len(outputs["events"])
    crossed = next(m for m in messages if m.attributes["eventType"] == "GeofenceCrossed")
    assert crossed.ordering_key == crossed.attributes["subject"]
    assert crossed.attributes["source"] == "geofence-pipeline"


def test_the_shard_state_coder_round_trips_every_field() -> None:
    from pipelines.geofence.model import Located
    from pipelines.geofence.tracking import Streak, VehicleState
    from pipelines.geofence.transforms import Shard, ShardCoder

    ping = Ping("veh-1", "e-1", 100.0, 52.5, 13.4, 5.0, 3.0)
    full = VehicleState(
        vehicle_id="veh-1",
        pending={"e-1": Located(ping, frozenset({"f1"}), frozenset({"f1", "f2"}), known=False)},
        last_ts=99.0,
        last_lat=52.4,
        last_lng=13.3,
        last_id="e-0",
        inside={"f3": 42.0},
        entering={"f1": Streak(98.0, 52.5, 13.4, 2)},
        leaving={"f3": Streak(97.0, 52.6, 13.5)},
        anchor=(90.0, 52.5, 13.4),
        idle_reported=True,
        flush_at=101.0,
    )
    shard = Shard({"veh-1": full, "veh-2": VehicleState(vehicle_id="veh-2")}, wake_at=105.0)
    coder = ShardCoder()

    decoded = coder.decode(coder.encode(shard))

    assert decoded == shard
    located = decoded.vehicles["veh-1"].pending["e-1"]
    assert type(located) is Located and type(located.ping) is Ping
    assert type(decoded.vehicles["veh-1"].entering["f1"]) is Streak
