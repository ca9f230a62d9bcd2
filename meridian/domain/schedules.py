"""Scheduled dispatch windows: a recurring definition ("weekdays 06:00 and 11:00, depot D1, cutoff
30 minutes before each") and the windows it makes due.

Times are the depot's wall-clock times in its IANA time zone, so a window opens at 06:00 local
time across daylight-saving changes; a start that a change skips (02:30 on a spring-forward night)
is read as the offset before the change (``zoneinfo``'s ``fold=0``), and a repeated one as its
first occurrence. A window is *due* at its cutoff (its start less ``cutoff_minutes``): parcels
created after the cutoff wait for the next window. Its id derives from the schedule and the due
time, so every firing that finds it due names the same window (and so one saga).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from meridian.domain.model import GeoPoint, Identifier, TimeWindow, Value

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# "HH:MM", 00:00 to 23:59: stored as text (a document store has no time-of-day type)
LocalTime = str
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
MAX_SCHEDULE_ID = 96


class DispatchSchedule(Value):
    """A recurring dispatch window definition; what the desk sends, without who or when."""

    schedule_id: Identifier
    depot_id: Identifier
    depot: GeoPoint
    time_zone: str = Field(description="the depot's IANA time zone, e.g. Asia/Kolkata")
    weekdays: tuple[Weekday, ...] = Field(min_length=1, max_length=7)
    starts: tuple[LocalTime, ...] = Field(
        min_length=1, max_length=48, description="each window's local start, HH:MM"
    )
    cutoff_minutes: int = Field(
        default=30, ge=0, le=1440, description="a window opens this long before it starts"
    )
    duration_minutes: int = Field(default=480, ge=15, le=1440, description="each window's length")
    max_offers: int = Field(default=3, ge=1, le=10)
    offer_timeout_s: float = Field(default=900, gt=0, le=43200)
    solve_time_limit_s: float = Field(default=10, gt=0, le=600)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name, e.g. Asia/Kolkata)"
            ) from None
        return value

    @field_validator("schedule_id")
    @classmethod
    def _room_for_due_times(cls, value: str) -> str:
        # a window id (the schedule id and a due time) must still be an Identifier
        if len(value) > MAX_SCHEDULE_ID:
            raise ValueError(f"at most {MAX_SCHEDULE_ID} characters")
        return value

    @field_validator("weekdays", "starts")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each value once")
        return value

    @field_validator("starts")
    @classmethod
    def _clock_times(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for start in value:
            if not re.match(_HHMM, start):
                raise ValueError(f"{start!r} is not a time of day as HH:MM")
        return tuple(sorted(value))


@dataclass(frozen=True)
class DueWindow:
    """One window a schedule makes: its id, when it is due (its cutoff), and its times."""

    window_id: str
    due_at: datetime
    window: TimeWindow


def window_id(schedule_id: str, due_at: datetime) -> str:
    """The window a schedule opens at ``due_at``: the same id for every firing that finds it."""
    return f"{schedule_id}-{due_at.astimezone(UTC):%Y%m%dT%H%MZ}"


def windows_between(schedule: DispatchSchedule, first: date, last: date) -> Iterator[DueWindow]:
    """The windows starting on the depot's local dates ``first`` to ``last``, in order."""
    zone = ZoneInfo(schedule.time_zone)
    cutoff = timedelta(minutes=schedule.cutoff_minutes)
    length = timedelta(minutes=schedule.duration_minutes)
    day = first
    while day <= last:
        if WEEKDAYS[day.weekday()] in schedule.weekdays:
            for start in schedule.starts:
                local = datetime.combine(day, time.fromisoformat(start), tzinfo=zone)
                begins = local.astimezone(UTC)
                due = begins - cutoff
                yield DueWindow(
                    window_id(schedule.schedule_id, due),
                    due,
                    TimeWindow(start=begins, end=begins + length),
                )
        day += timedelta(days=1)


def due_windows(schedule: DispatchSchedule, after: datetime, now: datetime) -> list[DueWindow]:
    """The windows to open at ``now``: due after ``after`` (the last one opened, or when the
    schedule was made) and at or before ``now``, and not over yet. A window whose whole span
    passed with nothing firing (the platform down all morning) is not opened late."""
    zone = ZoneInfo(schedule.time_zone)
    # a window due by now starts before now + cutoff; one not over started after now - length
    # (a day either side for offsets and dates that differ from UTC's)
    first = (now - timedelta(minutes=schedule.duration_minutes)).astimezone(zone).date()
    last = (now + timedelta(minutes=schedule.cutoff_minutes)).astimezone(zone).date()
    return [
        w
        for w in windows_between(schedule, first - timedelta(days=1), last + timedelta(days=1))
        if after < w.due_at <= now < w.window.end
    ]


def next_window(schedule: DispatchSchedule, now: datetime) -> DueWindow:
    """The first window due after ``now`` (within the next eight days: every weekday once)."""
    zone = ZoneInfo(schedule.time_zone)
    today = now.astimezone(zone).date()
    return next(
        w
        for w in windows_between(schedule, today - timedelta(days=1), today + timedelta(days=8))
        if w.due_at > now
    )
