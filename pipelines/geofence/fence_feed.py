"""The fence side input: a slowly changing stream of ``FenceSnapshot``s, one per change.

The locate step reads it as ``AsList`` in the global window and locates each ping against the
newest snapshot in effect at the ping's time (``FenceSnapshot.effective_from``), so a fence
written to the ``geofences`` collection applies from the next refresh on, without a restart,
and the same ping is judged the same way in a replay. One function, ``fence_snapshots``, picks
how the stream is made, as ``source.read_pings`` picks the ping source:

- batch (archive replay): one snapshot, applying to every ping;
- Dataflow: ``PeriodicImpulse`` every ``refresh_s``, each firing loads the fences, in the global
  window re-triggered per element (the documented slowly-changing side-input pattern);
- the DirectRunner in streaming: ``RefreshFences``, a root transform with its own evaluator
  (``direct_root.py``).

Why a root of ours on the DirectRunner. Its side inputs are ready only once the producer's output
watermark passes the end of the main input's window; a ``PeriodicImpulse`` there is a splittable
DoFn whose watermark the DirectRunner holds at -infinity, so the locate step would wait forever.
``RefreshFences`` instead reports a watermark hold at the end of the global window as soon as it
has loaded the fences once: the side input is then ready, and the DirectRunner keeps evaluating
the root (it is not done until its watermark is +infinity), so later snapshots still arrive and
are visible to every bundle after them. It finishes when every other root has finished, so a
pipeline whose source stops (tests, benchmarks) still ends.

Snapshots are emitted only when the fingerprint changes, so the side input stays a handful of
elements however long the job runs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp

from pipelines.geofence.direct_root import RootEvaluator, RunStates, UnboundedRoot, register_root
from pipelines.geofence.fences import FenceSnapshot, snapshot
from pipelines.geofence.loaders import FenceLoader

log = logging.getLogger(__name__)


def fence_snapshots(
    p: beam.Pipeline, loader: FenceLoader, refresh_s: float, *, streaming: bool, direct: bool
) -> beam.PCollection:
    """The fence side-input stream for this pipeline (see the module docstring)."""
    if not streaming:
        return (
            p
            | "FencesOnce" >> beam.Impulse()
            | "LoadFences" >> beam.Map(lambda _: snapshot(loader.fences()))
        )
    if direct:
        return p | "RefreshFences" >> RefreshFences(loader, refresh_s)
    from apache_beam.transforms import trigger
    from apache_beam.transforms.periodicsequence import PeriodicImpulse

    return (
        p
        | "FenceTicks" >> PeriodicImpulse(fire_interval=refresh_s, apply_windowing=False)
        | "LoadFences" >> beam.Map(lambda tick: snapshot(loader.fences(), float(tick)))
        | "LatestFences"
        >> beam.WindowInto(
            GlobalWindows(),
            trigger=trigger.Repeatedly(trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
        )
    )


def in_effect(snapshots: list[FenceSnapshot], ts: float) -> FenceSnapshot | None:
    """The newest snapshot in effect at ``ts``; the oldest one for pings older than all of them
    (a trigger-fired side input on Dataflow only holds the latest), None when there is none yet."""
    chosen = None
    for snap in snapshots:  # sorted by effective_from
        if snap.effective_from <= ts or chosen is None:
            chosen = snap
        else:
            break
    return chosen


class RefreshFences(UnboundedRoot):
    """A root transform: FenceSnapshots from ``loader`` every ``refresh_s`` (DirectRunner only)."""

    def __init__(self, loader: FenceLoader, refresh_s: float) -> None:
        super().__init__()
        self.loader = loader
        self.refresh_s = refresh_s


@dataclass
class _RefreshState:
    version: str | None = None
    loaded_at: float = -math.inf  # monotonic
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATES: RunStates[_RefreshState] = RunStates(lambda _: _RefreshState())


class _RefreshFencesEvaluator(RootEvaluator):
    def evaluate(self) -> tuple[list[tuple[FenceSnapshot, Timestamp]], Timestamp]:
        transform: RefreshFences = self.transform
        state = _STATES.of(transform)
        outputs = []
        with state.lock:
            if self.others_done():
                return [], MAX_TIMESTAMP
            now = time.monotonic()
            if now - state.loaded_at >= transform.refresh_s:
                fresh = self._load(transform.loader, first=state.version is None)
                state.loaded_at = now
                if fresh is not None and fresh.version != state.version:
                    log.info("geofences loaded: %d fences, version %s", *_describe(fresh))
                    state.version = fresh.version
                    outputs.append((fresh, MIN_TIMESTAMP))
            # Until the first load succeeds the locate step waits; after it, it never does.
            hold = Timestamp.of(0) if state.version is None else GlobalWindow().end
        return outputs, hold

    @staticmethod
    def _load(loader: FenceLoader, first: bool) -> FenceSnapshot | None:
        try:
            # The first snapshot covers every earlier ping too; later ones apply from now on.
            return snapshot(loader.fences(), -math.inf if first else time.time())
        except Exception:
            # A store briefly unreachable must not stop tracking: keep the last snapshot.
            log.exception("could not load geofences; keeping the previous snapshot")
            return None


def _describe(snap: FenceSnapshot) -> tuple[int, str]:
    return len(snap.fences), snap.version


register_root(RefreshFences, _RefreshFencesEvaluator)
