"""Vehicle telemetry: a batch of pings from a driver app or a fleet gateway, published to the
telemetry topic. Each element is judged on its own, so one bad ping does not sink the batch: it is
refused by its index with the reason (not a valid ping, dated beyond the clock skew allowed or too
old, another driver's vehicle) and the good ones are published. Writes nothing to the document
store; reads it at most once a batch, to learn which vehicle a driver drives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pydantic

from meridian.domain.actors import Actor, Role
from meridian.domain.commands import RecordPing
from meridian.domain.events import VehiclePing, derive_event_id
from meridian.domain.states import ParcelStatus
from meridian.observability import current_traceparent, get_logger
from meridian.ports import DocumentStore, Query
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
    """Which vehicles each driver drives at the time: those of the parcels assigned to them and
    not yet delivered (assigned, out for delivery, or failed and still aboard). Parcels are the
    one record both kinds of assignment write: the desk's ``:assign`` and the dispatch saga's
    confirmed route (which also leaves the driver's route on ``drivers/{id}``, but the desk does
    not). A vehicle no driver is assigned may be reported only by the desk or a gateway.

    One query per driver, kept ``FRESH_FOR``: a phone posts every few seconds, so most batches
    read nothing. A batch naming a vehicle the kept answer lacks reads again (``recheck``: a
    driver just given another vehicle is accepted at once), unless the answer is under
    ``REREAD_AFTER`` old, so that a driver posting others' vehicles cannot make the service query
    for every batch. A batch reads once at most.
    """

    FRESH_FOR = timedelta(seconds=30)
    REREAD_AFTER = timedelta(seconds=5)
    MAX_DRIVERS = 50_000  # forgotten all at once beyond this: a few reads, then warm again
    CARRYING = (
        ParcelStatus.ASSIGNED.value,
        ParcelStatus.OUT_FOR_DELIVERY.value,
        ParcelStatus.DELIVERY_FAILED.value,
    )

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._known: dict[str, tuple[datetime, frozenset[str]]] = {}

    def of(self, driver: str, now: datetime) -> frozenset[str]:
        """The vehicles ``driver`` drives, as last read if that is fresh enough."""
        known = self._known.get(driver)
        if known is not None and now - known[0] < self.FRESH_FOR:
            return known[1]
        return self._read(driver, now)

    def recheck(self, driver: str, now: datetime) -> frozenset[str]:
        """The vehicles ``driver`` drives, read again (for a vehicle the last read lacked)
        unless that read is under ``REREAD_AFTER`` old."""
        known = self._known.get(driver)
        if known is not None and now - known[0] < self.REREAD_AFTER:
            return known[1]
        return self._read(driver, now)

    def _read(self, driver: str, now: datetime) -> frozenset[str]:
        parcels = self._store.query(
            Query("parcels")
            .where("driver_id", "==", driver)
            .where("status", "in", list(self.CARRYING))
        )
        vehicles = frozenset(str(p.data["vehicle_id"]) for p in parcels if p.data.get("vehicle_id"))
        if len(self._known) >= self.MAX_DRIVERS:
            self._known.clear()
        self._known[driver] = (now, vehicles)
        return vehicles


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
    others in the batch are published.
    """
    actor.require(*REPORTERS)
    now = deps.clock()
    window = deps.ping_window
    earliest, latest = window.bounds(now)
    driver = actor.subject if actor.role == "driver" else None
    vehicles = assigned.of(driver, now) if driver is not None else frozenset()
    rechecked = False
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
                if not rechecked:  # perhaps just given it: one more read for the batch, at most
                    vehicles, rechecked = assigned.recheck(driver, now), True
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
    if refused:
        REFUSED.update(refused)
        log.warning(
            "telemetry pings refused",
            caller=f"{actor.role}:{actor.subject}",
            refused=sum(refused.values()),
            reasons=dict(refused),
        )
    if events:
        # One request, one trace; and what the messages share is looked up once for the batch.
        messages = deps.codec.record_messages(VehiclePing.event_type, events, current_traceparent())
        deps.publisher.publish(deps.codec.topic_of(VehiclePing.event_type), messages)
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
