"""The small, immutable records that flow through the job.

Plain NamedTuples rather than pydantic models: the DirectRunner handles millions of them, and
a NamedTuple costs a fraction of a model to build, compare and pickle.
"""

from __future__ import annotations

from typing import NamedTuple


class Ping(NamedTuple):
    """One decoded GPS ping; ``ts`` is the ping's own time (recorded_at) in epoch seconds."""

    vehicle_id: str
    event_id: str
    ts: float
    lat: float
    lng: float
    speed_mps: float | None = None
    accuracy_m: float | None = None


class Rejected(NamedTuple):
    """A message or ping the job will not use, with the reason; it goes to the dead-letter topic."""

    reason: str
    data: bytes
    attributes: tuple[tuple[str, str], ...] = ()


class PingBatch(NamedTuple):
    """Pings handled together so the spatial index is queried once per batch, not per ping."""

    pings: tuple[Ping, ...]
    rejected: tuple[Rejected, ...] = ()


class Located(NamedTuple):
    """A ping with the fences it is inside of, as seen through the hysteresis margins.

    ``inner``: fences whose shrunk shape contains the ping (it may enter them);
    ``outer``: fences whose grown shape contains it (it has not left them).
    ``known`` is False when no fence snapshot covered the ping's time: it then moves no fence state.
    """

    ping: Ping
    inner: frozenset[str]
    outer: frozenset[str]
    known: bool = True
