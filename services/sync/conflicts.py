"""When both sides changed the same record since the last sync: who wins, field by field.

- **Status (parcels): the parcel state machine decides** (``meridian.domain.states``). A final
  state (DELIVERED, RETURNED) is never left for a non-final one; otherwise the status one move
  further along the transition table wins; two statuses neither of which follows the other fall
  to the last writer. The fields that go with a status (``STATUS_FIELDS``: who carried it, when
  it was delivered and where, the attempts and the failure reason) follow the status's winner,
  so a document never says DELIVERED with the other side's empty delivery.
- **Every other field: the last writer** by ``updated_at`` (the monolith row's stamp against the
  Meridian document's); **a tie goes to Meridian** (``SOURCE_PRIORITY``): the system the
  operator's work is moving to.

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


class Source(StrEnum):
    MERIDIAN = "meridian"
    MONOLITH = "monolith"


class Rule(StrEnum):
    FINAL_STATE = "final-state"  # a delivered or returned parcel is never moved back
    STATE_MACHINE = "state-machine"  # the status one move further along wins
    LAST_WRITER = "last-writer"  # the later updated_at wins
    SOURCE_PRIORITY = "source-priority"  # equal updated_at: SOURCE_PRIORITY[0] wins


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


@dataclass(frozen=True)
class Decision:
    field: str
    winner: Source
    rule: Rule


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


def resolve(
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    meridian_at: datetime,
    monolith_at: datetime,
    has_status: bool,
) -> tuple[dict[str, Any], list[Decision]]:
    """The synced fields after the conflict (``current``: Meridian's, ``incoming``: the
    monolith's, both as documents) and a decision per field that differed."""
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
