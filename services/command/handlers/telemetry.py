"""Vehicle telemetry: a driver app's batch of pings published to the telemetry topic, each ping
checked on its own so one bad ping does not sink the batch. Never touches the document store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pydantic

from meridian.domain.actors import Actor
from meridian.domain.commands import RecordPing
from meridian.domain.events import VehiclePing, derive_event_id
from meridian.observability import current_traceparent
from services.command.handlers import Deps

MAX_PINGS_PER_BATCH = 500


def vehicle_ping(
    vehicle_id: str,
    driver_id: str,
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


def record_pings(pings: Sequence[RecordPing | str], actor: Actor, deps: Deps) -> dict[str, Any]:
    """Publish a batch of pings to the telemetry topic; never touches the document store.

    ``pings`` are the request's pings, each validated or the reason it is not
    (``validated_pings``): bad ones are listed with their index and error, good ones in the same
    batch are kept.
    """
    actor.require("driver")
    now = deps.clock()
    events, rejected = [], []
    for index, ping in enumerate(pings):
        if isinstance(ping, str):
            rejected.append({"index": index, "error": ping})
            continue
        if ping.driver_id is not None and ping.driver_id != actor.subject:
            rejected.append(
                {"index": index, "error": f"driver_id: not {actor.subject}, the token's driver"}
            )
            continue
        # RecordPing has checked every field VehiclePing constrains.
        position = ping.position
        events.append(
            vehicle_ping(
                ping.vehicle_id,
                actor.subject,
                position.lat,
                position.lng,
                ping.heading_deg,
                ping.speed_mps,
                ping.accuracy_m,
                ping.recorded_at,
                now,
            )
        )
    if events:
        # One request, one trace; and what the messages share is looked up once for the batch.
        messages = deps.codec.record_messages(VehiclePing.event_type, events, current_traceparent())
        deps.publisher.publish(deps.codec.topic_of(VehiclePing.event_type), messages)
    return {"accepted": len(events), "rejected": rejected}


def validated_pings(raw_pings: Sequence[Any]) -> list[RecordPing | str]:
    """Each ping validated on its own, or why it is not valid, to keep the good pings of a
    batch and name each bad one. (A batch whose pings are all valid is validated in one pass
    from the request body before it comes to this.)"""
    results: list[RecordPing | str] = []
    for raw in raw_pings:
        try:
            results.append(RecordPing.model_validate(raw))
        except pydantic.ValidationError as e:
            results.append(
                "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'ping'}: {err['msg']}"
                    for err in e.errors()
                )
            )
    return results
