"""The job's Beam transforms: validate, locate against the fences, track each vehicle, publish.

``Detect`` is the whole detection part and takes a PCollection of ``PingBatch``; each source
(``source.py``: the embedded broker, Pub/Sub on Dataflow, the warehouse archive, TestStream in
tests) only has to produce batches stamped with event time.

Fences are reloaded by ``Locate`` once per event-time refresh window (``fence_refresh_s``), so a
fence written to the store takes effect from the next window on without a restart. (A Beam side
input was tried first: the bundle-based DirectRunner blocks a global-window side input forever
and crashed on windowed ones with empty bundles, so it is not used.)
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.transforms.window import (
    GlobalWindow,
    TimestampedValue,
)
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from meridian.ports import Message
from pipelines.geofence import tracking
from pipelines.geofence.fences import FenceSet
from pipelines.geofence.loaders import FenceLoader
from pipelines.geofence.model import Located, Ping, PingBatch, Rejected
from pipelines.geofence.sinks import PublisherSpec
from pipelines.geofence.validation import Limits, rejected_ping, validate

log = logging.getLogger(__name__)

DEAD = "dead_letters"
NAMESPACE = "geofence"
PUBLISH_LIMIT = 1000


@dataclass(frozen=True)
class DetectSettings:
    limits: Limits = field(default_factory=Limits)
    tracker: tracking.TrackerConfig = field(default_factory=tracking.TrackerConfig)
    fence_refresh_s: float = 10.0


class Detect(beam.PTransform):  # type: ignore[misc]
    """PingBatch → (events, dead letters): GeofenceCrossed / VehicleIdle and Rejected."""

    def __init__(self, settings: DetectSettings, fences: FenceLoader) -> None:
        super().__init__()
        self._settings = settings
        self._fences = fences

    def expand(self, batches: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        refresh = self._settings.fence_refresh_s
        checked = batches | "Validate" >> beam.ParDo(
            ValidateBatch(self._settings.limits)
        ).with_outputs(DEAD, main="pings")
        tracked = (
            checked.pings
            | "SplitByFenceWindow" >> beam.ParDo(SplitByWindow(refresh))
            | "Locate" >> beam.ParDo(LocateBatch(self._fences, refresh))
            | "TrackVehicles"
            >> beam.ParDo(TrackVehicles(self._settings.tracker))
            .with_input_types(tuple[str, Any])  # a deterministic key coder for vehicle ids
            .with_outputs(DEAD, main="events")
        )
        dead = (checked[DEAD], tracked[DEAD]) | "DeadLetters" >> beam.Flatten()
        return tracked.events, dead


class BatchPings(beam.DoFn):  # type: ignore[misc]
    """Single timestamped Pings (Pub/Sub on Dataflow, tests) → one PingBatch per bundle."""

    def start_bundle(self) -> None:
        self._pings: list[Ping] = []

    def process(self, ping: Ping) -> Iterator[Any]:
        self._pings.append(ping)
        return iter(())

    def finish_bundle(self) -> Iterator[Any]:
        if self._pings:
            first = min(p.ts for p in self._pings)
            # finish_bundle has no input element, so it states the window and timestamp itself.
            yield WindowedValue(
                PingBatch(tuple(self._pings)), Timestamp.of(first), [GlobalWindow()]
            )
        self._pings = []


class ValidateBatch(beam.DoFn):  # type: ignore[misc]
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._valid = Metrics.counter(NAMESPACE, "pings_valid")
        self._dead = Metrics.counter(NAMESPACE, "pings_dead_lettered")

    def process(self, batch: PingBatch) -> Iterator[Any]:
        good, bad = validate(batch, self._limits)
        self._valid.inc(len(good))
        if bad:
            self._dead.inc(len(bad))
            for rejected in bad:
                yield beam.pvalue.TaggedOutput(DEAD, rejected)
        if good:
            yield tuple(good)


class SplitByWindow(beam.DoFn):  # type: ignore[misc]
    """Cut a batch at fence-window boundaries so each piece is stamped inside its own window."""

    def __init__(self, size_s: float) -> None:
        self._size = size_s

    def process(self, pings: tuple[Ping, ...]) -> Iterator[TimestampedValue]:
        pieces: dict[int, list[Ping]] = defaultdict(list)
        for ping in pings:
            pieces[int(ping.ts // self._size)].append(ping)
        for piece in pieces.values():
            yield TimestampedValue(tuple(piece), min(p.ts for p in piece))


class LocateBatch(beam.DoFn):  # type: ignore[misc]
    """Fence memberships of a piece of pings, grouped per vehicle for the stateful step.

    The fence set is reloaded whenever a piece belongs to a new refresh window of event time
    (``SplitByWindow`` cuts pieces at those boundaries), so a fence written to the store takes
    effect from the next window on, without restarting the job.
    """

    def __init__(self, loader: FenceLoader, refresh_s: float) -> None:
        self._loader = loader
        self._refresh = refresh_s
        self._unknown = Metrics.counter(NAMESPACE, "pings_without_fence_snapshot")

    def setup(self) -> None:
        self._fences: FenceSet | None = None
        self._window: int | None = None

    def _fences_for(self, window: int) -> FenceSet | None:
        if window != self._window:
            try:
                fences = self._loader.load((window + 1) * self._refresh)
            except Exception:
                # A store briefly unreachable must not stop tracking: keep the last snapshot.
                log.exception("could not load geofences; keeping the previous snapshot")
                return self._fences
            if self._fences is None or fences.version != self._fences.version:
                log.info("geofences loaded: %d fences, version %s", len(fences), fences.version)
            self._fences, self._window = fences, window
        return self._fences

    def process(self, pings: tuple[Ping, ...]) -> Iterator[TimestampedValue]:
        fences = self._fences_for(int(pings[0].ts // self._refresh))
        if fences is None:
            self._unknown.inc(len(pings))
            located = [Located(p, frozenset(), frozenset(), known=False) for p in pings]
        else:
            located = fences.locate(pings)
        per_vehicle: dict[str, list[Located]] = defaultdict(list)
        for loc in located:
            per_vehicle[loc.ping.vehicle_id].append(loc)
        for vehicle, locs in per_vehicle.items():
            yield TimestampedValue((vehicle, tuple(locs)), min(loc.ping.ts for loc in locs))


class TrackVehicles(beam.DoFn):  # type: ignore[misc]
    """Per-vehicle state in event time: buffer, wait for the watermark, apply in order.

    ``flush`` fires once the watermark passes the newest buffered ping; ``idle`` fires
    ``idle_after_s`` after the vehicle last moved more than the idle radius.
    """

    STATE = userstate.ReadModifyWriteStateSpec("vehicle", PickleCoder())
    FLUSH = userstate.TimerSpec("flush", userstate.TimeDomain.WATERMARK)
    IDLE = userstate.TimerSpec("idle", userstate.TimeDomain.WATERMARK)

    def __init__(self, config: tracking.TrackerConfig) -> None:
        self._config = config
        self._late = Metrics.counter(NAMESPACE, "pings_late_dropped")
        self._duplicate = Metrics.counter(NAMESPACE, "pings_duplicate_dropped")
        self._impossible = Metrics.counter(NAMESPACE, "pings_impossible")
        self._entered = Metrics.counter(NAMESPACE, "geofence_enter")
        self._exited = Metrics.counter(NAMESPACE, "geofence_exit")
        self._idle = Metrics.counter(NAMESPACE, "vehicle_idle")

    def process(
        self,
        element: tuple[str, tuple[Located, ...]],
        state: Any = beam.DoFn.StateParam(STATE),
        flush: Any = beam.DoFn.TimerParam(FLUSH),
    ) -> Iterator[Any]:
        vehicle, locs = element
        current = state.read() or tracking.VehicleState(vehicle_id=vehicle)
        for loc in locs:
            dropped = tracking.add(current, loc)
            if dropped == "late":
                self._late.inc()
            elif dropped == "duplicate":
                self._duplicate.inc()
        until = tracking.pending_until(current)
        if until is not None:
            flush.set(Timestamp.of(until))
        state.write(current)
        return iter(())

    @userstate.on_timer(FLUSH)
    def on_flush(
        self,
        fired: Timestamp = beam.DoFn.TimestampParam,
        state: Any = beam.DoFn.StateParam(STATE),
        flush: Any = beam.DoFn.TimerParam(FLUSH),
        idle: Any = beam.DoFn.TimerParam(IDLE),
    ) -> Iterator[Any]:
        yield from self._advance(float(fired.micros) / 1e6, state, flush, idle)

    @userstate.on_timer(IDLE)
    def on_idle(
        self,
        fired: Timestamp = beam.DoFn.TimestampParam,
        state: Any = beam.DoFn.StateParam(STATE),
        flush: Any = beam.DoFn.TimerParam(FLUSH),
        idle: Any = beam.DoFn.TimerParam(IDLE),
    ) -> Iterator[Any]:
        yield from self._advance(float(fired.micros) / 1e6, state, flush, idle)

    def _advance(self, upto: float, state: Any, flush: Any, idle: Any) -> Iterator[Any]:
        current: tracking.VehicleState | None = state.read()
        if current is None:
            return
        anchor_before = current.anchor
        events, impossible = tracking.advance(current, upto, self._config)
        for ping, reason in impossible:
            self._impossible.inc()
            yield beam.pvalue.TaggedOutput(DEAD, rejected_ping(ping, reason))
        until = tracking.pending_until(current)
        if until is not None:
            flush.set(Timestamp.of(until))
        check = current.next_idle_check
        if check is not None and current.anchor != anchor_before:
            idle.set(Timestamp.of(check + self._config.idle_after_s))
        state.write(current)
        for event in events:
            if event.event_type == "VehicleIdle":
                self._idle.inc()
            elif event.direction.value == "ENTER":  # type: ignore[union-attr]
                self._entered.inc()
            else:
                self._exited.inc()
            yield event


class EncodeEvents(beam.DoFn):  # type: ignore[misc]
    """Domain events → Pub/Sub messages with the catalog's attributes and ordering key."""

    def __init__(self, catalog_path: str | None = None) -> None:
        self._catalog_path = catalog_path

    def setup(self) -> None:
        from meridian.catalog import load_catalog
        from meridian.codec import EventCodec

        self._codec = EventCodec(load_catalog(self._catalog_path))

    def process(self, event: Any) -> Iterator[Message]:
        yield self._codec.to_message(event)


def dead_letter_message(rejected: Rejected) -> Message:
    attributes = dict(rejected.attributes)
    attributes["deadLetterReason"] = rejected.reason[:1024]
    attributes["deadLetteredBy"] = "geofence-pipeline"
    return Message(data=rejected.data, attributes=attributes)


class Publish(beam.DoFn):  # type: ignore[misc]
    """Publish a bundle's messages in one call at the end of the bundle (durable when it returns)."""

    def __init__(self, spec: PublisherSpec, topic: str) -> None:
        self._spec = spec
        self._topic = topic

    def setup(self) -> None:
        self._publisher = self._spec.build()
        self._published = Metrics.counter(NAMESPACE, f"published_{self._topic}")

    def start_bundle(self) -> None:
        self._buffer: list[Message] = []

    def process(self, message: Message) -> Iterator[Any]:
        self._buffer.append(message)
        return iter(())

    def finish_bundle(self) -> None:
        if self._buffer:
            started = time.monotonic()
            for i in range(0, len(self._buffer), PUBLISH_LIMIT):  # Pub/Sub's per-request limit
                self._publisher.publish(self._topic, self._buffer[i : i + PUBLISH_LIMIT])
            self._published.inc(len(self._buffer))
            log.debug(
                "published %d to %s in %.3f s",
                len(self._buffer),
                self._topic,
                time.monotonic() - started,
            )
        self._buffer = []

    def teardown(self) -> None:
        close = getattr(getattr(self, "_publisher", None), "close", None)
        if callable(close):
            close()
