"""When a vehicle ping is believable: its ``recorded_at`` lies within a window around the clock
of whoever receives it.

A phone whose clock runs ahead would otherwise freeze its vehicle: the map and the geofence job
keep a vehicle's newest ping, and every real ping after one dated a year ahead looks stale. A
phone offline for a shift uploads its backlog when it is back in coverage, so old pings are
expected, but only so old.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PingWindow:
    """``max_skew``: how far ahead of the receiving clock a phone's clock may run (phones set
    their time from the network; minutes cover a drifting one). ``max_age``: how old a ping may
    be; a day covers a phone that was offline a whole shift and uploads the next morning, and a
    ping older than that can no longer move the map or cross a fence (newer positions exist), so
    its date is more likely a wrong clock than a backlog. Both are set from ``Settings``
    (``MERIDIAN_TELEMETRY_MAX_SKEW_S``, ``MERIDIAN_TELEMETRY_MAX_AGE_S``)."""

    max_skew: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(hours=24)

    @classmethod
    def of_seconds(cls, max_skew_s: float, max_age_s: float) -> PingWindow:
        return cls(timedelta(seconds=max_skew_s), timedelta(seconds=max_age_s))

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """The earliest and the latest ``recorded_at`` believable at ``now`` (computed once a
        batch: each ping then costs two comparisons)."""
        return now - self.max_age, now + self.max_skew

    def refusal(self, recorded_at: datetime, now: datetime) -> str:
        """Why ``recorded_at``, outside ``bounds(now)``, is refused."""
        if recorded_at > now:
            return (
                f"recorded_at: {recorded_at.isoformat()} is ahead of the server's clock by more"
                f" than {self.max_skew.total_seconds():g} s"
            )
        return f"recorded_at: {recorded_at.isoformat()} is older than {self.max_age.total_seconds():g} s"
