"""Vehicle telemetry: a batch of pings from a driver app or a fleet gateway, published to the
telemetry topic. Each element is judged on its own, so one bad ping does not sink the batch: it is
refused by its index with the reason (not a valid ping, dated beyond the clock skew allowed or too
old, another driver's vehicle) and the good ones are published. Writes nothing to the document
store; from a driver, reads it at most once a batch (the assignments of the vehicles the batch
names, ``AssignedVehicles``), to learn which vehicles the driver drives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import pydantic

from meridian.app.records import assigned_driver, vehicle_assignment_path
from meridian.domain.actors import Actor, Role
from meridian.domain.commands import RecordPing
from meridian.domain.events import VehiclePing, derive_event_id
from meridian.observability import current_traceparent, get_logger
from meridian.ports import DocumentStore
from services.command.handlers import Deps

log = get_logger(__name__)

MAX_PINGS_PER_BATCH = 500
# Who may report pings: a driver for the vehicle they drive; the dispatch desk and a trusted fleet
# gateway for any vehicle.
REPORTERS: tuple[Role, ...] = ("driver", "dispatcher", "gateway")
NOT_YOURS = "not your vehicle"
# Pings refused by this process since it started, by reason, for the refusals metric (each
# refusing batch also logs one "telemetry pings refused" line with its counts).
REFUSED: Counter[str] = Counter()


class AssignedVehicles:
    """Which vehicles each driver drives at the time, as the vehicles' assignments
    (``vehicle_assignments/{vehicle_id}``, ``meridian.app.records``) name them: written in the
    transaction of every change that puts a driver on a vehicle (the desk's ``:assign``, the
    driver's ``:out-for-delivery``, the dispatch saga's confirmed route). A vehicle whose
    assignment names another driver, or nobody, may be reported only by the desk or a gateway.

    A read is one ``get_all`` of the batch's vehicles and the driver's known ones (one document
    each: it costs the same whatever the number of parcels in flight, and needs no index), and
    what it finds is kept ``FRESH_FOR``: a phone posts every few seconds, so most batches read
    nothing. A batch naming a vehicle the kept answer lacks reads again (``of``: a driver just
    given another vehicle is accepted at once), unless the answer is under ``REREAD_AFTER`` old,
    so that a driver posting others' vehicles cannot make the service read for every batch. A
    read also drops a known vehicle whose assignment has gone to another driver. A batch reads
    once at most.
    """

    FRESH_FOR = timedelta(seconds=30)
    REREAD_AFTER = timedelta(seconds=5)
    MAX_DRIVERS = 50_000  # forgotten all at once beyond this: a few reads, then warm again

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._known: dict[str, tuple[datetime, frozenset[str]]] = {}

    def of(self, driver: str, vehicles: Collection[str], now: datetime) -> frozenset[str]:
        """The vehicles ``driver`` drives, as far as ``vehicles`` (those a batch names) need:
        as last read if that is fresh enough and knows them all, else read again, unless the last
        read is under ``REREAD_AFTER`` old."""
        known = self._known.get(driver)
        if known is not None:
            age = now - known[0]
            if age < self.REREAD_AFTER or (age < self.FRESH_FOR and known[1].issuperset(vehicles)):
                return known[1]
        return self._read(driver, {*(known[1] if known else ()), *vehicles}, now)

    def _read(self, driver: str, vehicles: Collection[str], now: datetime) -> frozenset[str]:
        paths = {vehicle_assignment_path(v): v for v in vehicles}
        assignments = self._store.get_all(list(paths))
        drives = frozenset(
            paths[path] for path, doc in assignments.items() if assigned_driver(doc) == driver
        )
        if len(self._known) >= self.MAX_DRIVERS:
            self._known.clear()
        self._known[driver] = (now, drives)
        return drives


def vehicle_ping(
    vehicle_id: str,
    driver_id: str | None,
    lat: float,
    lng: float,
    heading_deg: float | None,
    speed_mps: float | None,
    accuracy_m: float | None,
    recorded_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """A VehiclePing's fields, for ``EventCodec.record_messages``: built without a model, from a
    ping already checked (a model per ping, built, then dumped for the encoder, cost more than the
    rest of the ingest path; the Avro writer still enforces the schema). The event id derives from
    the vehicle and the ping's time, so a retried batch republishes the same ids."""
    return {
        "event_id": derive_event_id("ping", vehicle_id, recorded_at.isoformat()),
        "occurred_at": now,
        "vehicle_id": vehicle_id,
        "driver_id": driver_id,
        "lat": lat,
        "lng": lng,
        "heading_deg": heading_deg,
        "speed_mps": speed_mps,
        "accuracy_m": accuracy_m,
        "recorded_at": recorded_at,
    }


def record_pings(
    pings: Sequence[RecordPing | str], actor: Actor, deps: Deps, assigned: AssignedVehicles
) -> dict[str, Any]:
    """Publish a batch of pings to the telemetry topic; never writes the document store.

    ``pings`` are the request's elements, each validated or the reason it is not
    (``validated_pings``). Refused, each by its index with the reason: an invalid one, one whose
    ``recorded_at`` lies outside ``deps.ping_window`` of ``deps.clock``, and, from a driver, one
    naming another driver (``driver_id``) or a vehicle they do not drive (``assigned``). The
    others in the batch are published. The publish is its one effect and comes first: a call
    that raises before it has done nothing, and may be run again.
    """
    actor.require(*REPORTERS)
    now = deps.clock()
    window = deps.ping_window
    earliest, latest = window.bounds(now)
    driver = actor.subject if actor.role == "driver" else None
    vehicles: frozenset[str] = frozenset()
    if driver is not None:  # the vehicles the batch names, read at most once for it
        vehicles = assigned.of(driver, {p.vehicle_id for p in pings if not isinstance(p, str)}, now)
    events, rejected = [], []
    refused: Counter[str] = Counter()
    for index, ping in enumerate(pings):
        if isinstance(ping, str):
            rejected.append({"index": index, "error": ping})
            continue
        recorded_at = ping.recorded_at
        if not earliest <= recorded_at <= latest:
            refused["ahead of the clock" if recorded_at > now else "too old"] += 1
            rejected.append({"index": index, "error": window.refusal(recorded_at, now)})
            continue
        if driver is None:
            driver_id = ping.driver_id
        else:
            if ping.driver_id is not None and ping.driver_id != driver:
                refused["another driver"] += 1
                rejected.append(
                    {"index": index, "error": f"driver_id: not {driver}, the token's driver"}
                )
                continue
            if ping.vehicle_id not in vehicles:
                refused[NOT_YOURS] += 1
                drives = ", ".join(sorted(vehicles)) or "none"
                error = f"vehicle_id: {NOT_YOURS} ({driver} drives {drives})"
                rejected.append({"index": index, "error": error})
                continue
            driver_id = driver
        # RecordPing has checked every field VehiclePing constrains.
        position = ping.position
        events.append(
            vehicle_ping(
                ping.vehicle_id,
                driver_id,
                position.lat,
                position.lng,
                ping.heading_deg,
                ping.speed_mps,
                ping.accuracy_m,
                recorded_at,
                now,
            )
        )
    if events:
        # One request, one trace; and what the messages share is looked up once for the batch.
        messages = deps.codec.record_messages(VehiclePing.event_type, events, current_traceparent())
        deps.publisher.publish(deps.codec.topic_of(VehiclePing.event_type), messages)
    # Counted once published: a batch whose publish could not take the broker's lock at once
    # is run again from the start on a thread that may wait (``concurrency.offload.AtOnce``).
    if refused:
        REFUSED.update(refused)
        log.warning(
            "telemetry pings refused",
            caller=f"{actor.role}:{actor.subject}",
            refused=sum(refused.values()),
            reasons=dict(refused),
        )
    return {"accepted": len(events), "rejected": rejected}


def validated_pings(elements: Sequence[Any]) -> list[RecordPing | str]:
    """Each element of a batch validated on its own, or why it is not a valid ping, to keep the
    good pings of a batch and name each bad one. (A batch whose pings are all valid is validated
    in one pass from the request body before it comes to this.)"""
    results: list[RecordPing | str] = []
    for element in elements:
        if not isinstance(element, dict):
            results.append("ping: not a JSON object")
            continue
        try:
            results.append(RecordPing.model_validate(element))
        except pydantic.ValidationError as e:
            results.append(
                "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'ping'}: {err['msg']}"
                    for err in e.errors()
                )
            )
    return results
