"""When both sides changed the same record since the last sync: who wins, field by field.

**A three-way merge** (``merge``). The record's link keeps the base: per synced field, a digest
of the value each side held after the bridge's last write (``services.sync.entities``:
``field_digests``). Per field, against its base:

- **changed on one side only**: that side's value, and no conflict (the monolith editing an
  address does not undo Meridian's assignment of the parcel, and the other way round);
- **changed on both sides to the same value**, or on neither: nothing to decide;
- **changed on both sides to different values**: a conflict, decided by the rules below and
  recorded.

The rules, for a field both sides changed:

- **Status (parcels): the parcel state machine decides** (``meridian.domain.states``). A final
  state (DELIVERED, RETURNED) is never left for a non-final one; otherwise the status one move
  further along the transition table wins; two statuses neither of which follows the other fall
  to the last writer. The fields that go with a status (``STATUS_FIELDS``: who carried it, when
  it was delivered and where, the attempts and the failure reason) follow the status of the side
  that changed it, or of the winner when both did, so a document never says DELIVERED with the
  other side's empty delivery. A status only the monolith moved is still never taken away from
  a final state (``FINAL_STATE``).
- **Every other field: the last writer** by ``updated_at`` (the monolith row's stamp against the
  Meridian document's); **a tie goes to Meridian** (``SOURCE_PRIORITY``): the system the
  operator's work is moving to.

A record whose link predates the base (applied before the merge was three-way) is resolved as it
was then (``resolve``): every field that differs is decided by the rules.

**A status Meridian cannot express** (``cannot_express``): the monolith has no routes and no
dispatch windows, so its ASSIGNED or PLANNED cannot become a Meridian parcel's (whose
``ParcelAssigned`` names the route, ``ParcelPlanned`` the window); Meridian's status stands, rule
``INEXPRESSIBLE``, and the reason is recorded with the conflict (``services.sync.apply``).

Each decision names its rule (``Rule``); ``services.sync.apply`` records every conflict with both
versions and counts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from meridian.domain.states import PARCEL_TRANSITIONS, TERMINAL_STATES, ParcelStatus
from services.sync.entities import field_digests


class Source(StrEnum):
    MERIDIAN = "meridian"
    MONOLITH = "monolith"


class Rule(StrEnum):
    FINAL_STATE = "final-state"  # a delivered or returned parcel is never moved back
    STATE_MACHINE = "state-machine"  # the status one move further along wins
    LAST_WRITER = "last-writer"  # the later updated_at wins
    SOURCE_PRIORITY = "source-priority"  # equal updated_at: SOURCE_PRIORITY[0] wins
    INEXPRESSIBLE = "inexpressible"  # the monolith's status lacks what Meridian's needs


SOURCE_PRIORITY = (Source.MERIDIAN, Source.MONOLITH)
STATUS_FIELDS = frozenset(
    {
        "status",
        "driver_id",
        "vehicle_id",
        "attempts",
        "failure_reason",
        "delivered_at",
        "delivered_position",
    }
)

# What a Meridian parcel in a status holds for the event that announces the move
# (meridian.domain.events: ParcelPlanned names its window, ParcelAssigned its route, which the
# monolith has not; a parcel out for delivery is on its first attempt at least). A field named
# here is missing when None, a count when below 1. tests/unit/test_sync_inexpressible.py holds
# this table to the event publisher's.
NEEDS: dict[ParcelStatus, tuple[str, ...]] = {
    ParcelStatus.PLANNED: ("window_id",),
    ParcelStatus.ASSIGNED: ("route_id", "driver_id", "vehicle_id"),
    ParcelStatus.OUT_FOR_DELIVERY: ("driver_id", "vehicle_id", "attempts"),
    ParcelStatus.DELIVERED: ("driver_id", "vehicle_id", "delivered_at", "delivered_position"),
    ParcelStatus.DELIVERY_FAILED: ("driver_id", "vehicle_id"),
}


@dataclass(frozen=True)
class Decision:
    field: str
    winner: Source
    rule: Rule


@dataclass(frozen=True)
class Base:
    """The link's base: per synced field, the digest of the value each side held after the
    bridge's last write."""

    monolith: Mapping[str, str]
    meridian: Mapping[str, str]

    @classmethod
    def of(cls, monolith: Mapping[str, Any], meridian: Mapping[str, Any]) -> Base:
        return cls(field_digests(monolith), field_digests(meridian))

    @classmethod
    def from_link(cls, link: Mapping[str, Any]) -> Base | None:
        """The base a link keeps; None for a link written before the merge was three-way."""
        base = link.get("base")
        if not isinstance(base, Mapping):
            return None
        return cls(dict(base["monolith"]), dict(base["meridian"]))

    def to_link(self) -> dict[str, Any]:
        return {"monolith": dict(self.monolith), "meridian": dict(self.meridian)}

    def changed(self, side: Source, values: Mapping[str, Any]) -> set[str]:
        """The fields of ``values`` (that side's) that differ from the side's base."""
        base = self.monolith if side is Source.MONOLITH else self.meridian
        now = field_digests(values)
        return {key for key, digest in now.items() if base.get(key) != digest}


def _last_writer(meridian_at: datetime, monolith_at: datetime) -> tuple[Source, Rule]:
    if monolith_at > meridian_at:
        return Source.MONOLITH, Rule.LAST_WRITER
    if meridian_at > monolith_at:
        return Source.MERIDIAN, Rule.LAST_WRITER
    return SOURCE_PRIORITY[0], Rule.SOURCE_PRIORITY


def decide_status(
    meridian: str, monolith: str, meridian_at: datetime, monolith_at: datetime
) -> tuple[Source, Rule]:
    """Which side's parcel status stands, and by which rule."""
    ours, theirs = ParcelStatus(meridian), ParcelStatus(monolith)
    if (ours in TERMINAL_STATES) != (theirs in TERMINAL_STATES):
        return (Source.MERIDIAN if ours in TERMINAL_STATES else Source.MONOLITH), Rule.FINAL_STATE
    if ours not in TERMINAL_STATES:
        successors = {to for (origin, _), to in PARCEL_TRANSITIONS.items() if origin == ours}
        predecessors = {origin for (origin, _), to in PARCEL_TRANSITIONS.items() if to == ours}
        if theirs in successors and theirs not in predecessors:
            return Source.MONOLITH, Rule.STATE_MACHINE
        if theirs in predecessors and theirs not in successors:
            return Source.MERIDIAN, Rule.STATE_MACHINE
    return _last_writer(meridian_at, monolith_at)


def merge(
    base: Base,
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    meridian_at: datetime,
    monolith_at: datetime,
    has_status: bool,
) -> tuple[dict[str, Any], list[Decision]]:
    """The synced fields after a three-way merge (``current``: Meridian's, ``incoming``: the
    monolith's, both as documents; ``base``: the link's) and a decision per field in conflict."""
    ours, theirs = base.changed(Source.MERIDIAN, current), base.changed(Source.MONOLITH, incoming)
    merged = dict(current)
    decisions: list[Decision] = []
    differing = [f for f in incoming if current.get(f) != incoming[f]]
    status_owner: tuple[Source, Rule | None] | None = None  # who the status fields follow
    if has_status and "status" in differing and {"status"} & (ours | theirs):
        if "status" in ours and "status" in theirs:
            winner, rule = decide_status(
                current["status"], incoming["status"], meridian_at, monolith_at
            )
            status_owner = (winner, rule)
        elif "status" in theirs:
            final = ParcelStatus(current["status"]) in TERMINAL_STATES
            status_owner = (Source.MERIDIAN, Rule.FINAL_STATE) if final else (Source.MONOLITH, None)
        else:
            status_owner = (Source.MERIDIAN, None)
    for field in differing:
        if status_owner is not None and field in STATUS_FIELDS:
            winner, decided = status_owner
        elif field in theirs and field in ours:
            winner, decided = _last_writer(meridian_at, monolith_at)
        else:
            # One side changed it (that side's), or neither did since the bridge's last write
            # (Meridian's: a field it won before, which the push does not carry back).
            winner, decided = (Source.MONOLITH if field in theirs else Source.MERIDIAN), None
        if winner is Source.MONOLITH:
            merged[field] = incoming[field]
        if decided is not None:
            decisions.append(Decision(field, winner, decided))
    return merged, sorted(decisions, key=lambda d: d.field)


def resolve(
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    meridian_at: datetime,
    monolith_at: datetime,
    has_status: bool,
) -> tuple[dict[str, Any], list[Decision]]:
    """Without a base (a link written before the merge was three-way): the synced fields after
    the conflict, every field that differs decided by the rules, and a decision per field."""
    merged = dict(current)
    decisions: list[Decision] = []
    status_winner: tuple[Source, Rule] | None = None
    if has_status and current.get("status") != incoming.get("status"):
        status_winner = decide_status(
            current["status"], incoming["status"], meridian_at, monolith_at
        )
    for field, theirs in incoming.items():
        if current.get(field) == theirs:
            continue
        if status_winner is not None and field in STATUS_FIELDS:
            winner, rule = status_winner
        else:
            winner, rule = _last_writer(meridian_at, monolith_at)
        if winner is Source.MONOLITH:
            merged[field] = theirs
        decisions.append(Decision(field, winner, rule))
    return merged, decisions


def cannot_express(document: Mapping[str, Any]) -> list[str]:
    """What a parcel ``document`` lacks for its status (``NEEDS``): empty when Meridian can
    announce the parcel in it."""
    needed = NEEDS.get(ParcelStatus(document["status"]), ())
    return [field for field in needed if not _present(field, document.get(field))]


def _present(field: str, value: Any) -> bool:
    return value is not None and (field not in _COUNTS or value >= 1)


_COUNTS = frozenset({"attempts"})


def keep_expressible(
    before: Mapping[str, Any],
    merged: Mapping[str, Any],
    rest: Mapping[str, Any],
    decisions: list[Decision],
) -> tuple[dict[str, Any], list[Decision], list[str]]:
    """``merged`` (a parcel's synced fields; ``rest``: the document's others) unless it moves the
    parcel into a status Meridian cannot express: then Meridian's status and its fields
    (``before``) stand, each a decision by ``INEXPRESSIBLE``, and what was missing is returned."""
    kept = dict(merged)
    if merged.get("status") == before.get("status"):
        return kept, decisions, []
    missing = cannot_express({**rest, **merged})
    if not missing:
        return kept, decisions, []
    refused = [f for f in STATUS_FIELDS if f in merged and merged[f] != before.get(f)]
    for field in refused:
        kept[field] = before.get(field)
    decided = [d for d in decisions if d.field not in STATUS_FIELDS]
    decided += [Decision(f, Source.MERIDIAN, Rule.INEXPRESSIBLE) for f in refused]
    return kept, sorted(decided, key=lambda d: d.field), missing
