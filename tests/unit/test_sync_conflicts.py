"""The bridge's conflict rules, one decision at a time (services/sync/conflicts.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.sync.conflicts import (
    Base,
    Decision,
    Rule,
    Source,
    decide_status,
    keep_expressible,
    merge,
    resolve,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("meridian", "monolith", "meridian_at", "monolith_at", "winner", "rule"),
    [
        # never back from a final state, whoever wrote last
        ("DELIVERED", "OUT_FOR_DELIVERY", T0, LATER, Source.MERIDIAN, Rule.FINAL_STATE),
        ("OUT_FOR_DELIVERY", "DELIVERED", LATER, T0, Source.MONOLITH, Rule.FINAL_STATE),
        ("RETURNED", "CREATED", T0, LATER, Source.MERIDIAN, Rule.FINAL_STATE),
        # one move further along wins
        ("PLANNED", "ASSIGNED", LATER, T0, Source.MONOLITH, Rule.STATE_MACHINE),
        ("ASSIGNED", "PLANNED", T0, LATER, Source.MERIDIAN, Rule.STATE_MACHINE),
        # neither follows the other: the last writer, a tie to Meridian
        ("CREATED", "OUT_FOR_DELIVERY", T0, LATER, Source.MONOLITH, Rule.LAST_WRITER),
        ("CREATED", "OUT_FOR_DELIVERY", T0, T0, Source.MERIDIAN, Rule.SOURCE_PRIORITY),
        ("DELIVERED", "RETURNED", T0, LATER, Source.MONOLITH, Rule.LAST_WRITER),
    ],
)
def test_the_state_machine_decides_status(
    meridian: str,
    monolith: str,
    meridian_at: datetime,
    monolith_at: datetime,
    winner: Source,
    rule: Rule,
) -> None:
    assert decide_status(meridian, monolith, meridian_at, monolith_at) == (winner, rule)


def test_other_fields_go_to_the_last_writer_and_a_tie_to_meridian() -> None:
    current = {"name": "A", "email": "a@x.test", "status": "AVAILABLE"}
    incoming = {"name": "B", "email": "a@x.test", "status": "AVAILABLE"}
    merged, (decision,) = resolve(current, incoming, T0, LATER, has_status=False)
    assert merged["name"] == "B" and (decision.winner, decision.rule) == (
        Source.MONOLITH,
        Rule.LAST_WRITER,
    )
    merged, (decision,) = resolve(current, incoming, T0, T0, has_status=False)
    assert merged["name"] == "A" and decision.rule is Rule.SOURCE_PRIORITY


def test_the_fields_of_a_status_follow_its_winner() -> None:
    current = {"status": "DELIVERED", "failure_reason": None, "recipient": {"name": "R"}}
    incoming = {"status": "DELIVERY_FAILED", "failure_reason": "absent", "recipient": {"name": "S"}}
    merged, decisions = resolve(current, incoming, T0, LATER, has_status=True)
    assert merged == {"status": "DELIVERED", "failure_reason": None, "recipient": {"name": "S"}}
    assert {d.field: d.rule for d in decisions} == {
        "status": Rule.FINAL_STATE,
        "failure_reason": Rule.FINAL_STATE,
        "recipient": Rule.LAST_WRITER,
    }


# The three-way merge ----------------------------------------------------------------------------

BASE_PARCEL = {"status": "CREATED", "driver_id": None, "address": "1 MG Road", "weight_kg": 1.25}


def _merge(current: dict[str, object], incoming: dict[str, object], at: datetime = LATER) -> tuple:
    return merge(Base.of(BASE_PARCEL, BASE_PARCEL), current, incoming, T0, at, has_status=True)


def test_a_field_one_side_changed_is_that_sides_without_a_conflict() -> None:
    assigned = {**BASE_PARCEL, "status": "ASSIGNED", "driver_id": "d-1"}
    moved = {**BASE_PARCEL, "address": "2 MG Road"}
    merged, decisions = _merge(assigned, moved)
    assert merged == {**assigned, "address": "2 MG Road"} and decisions == []


def test_a_field_both_changed_alike_is_no_conflict() -> None:
    both = {**BASE_PARCEL, "weight_kg": 2}
    assert _merge(both, {**BASE_PARCEL, "weight_kg": 2.0}) == (both, [])


def test_a_field_both_changed_apart_goes_to_the_last_writer() -> None:
    merged, decisions = _merge({**BASE_PARCEL, "weight_kg": 2.0}, {**BASE_PARCEL, "weight_kg": 3.0})
    assert merged["weight_kg"] == 3.0
    assert decisions == [Decision("weight_kg", Source.MONOLITH, Rule.LAST_WRITER)]
    merged, decisions = _merge(
        {**BASE_PARCEL, "weight_kg": 2.0}, {**BASE_PARCEL, "weight_kg": 3.0}, at=T0
    )
    assert merged["weight_kg"] == 2.0 and decisions[0].rule is Rule.SOURCE_PRIORITY


def test_a_status_both_moved_is_the_state_machines_and_its_fields_follow() -> None:
    ours = {**BASE_PARCEL, "status": "ASSIGNED", "driver_id": "d-1"}
    theirs = {**BASE_PARCEL, "status": "PLANNED", "driver_id": None}
    merged, decisions = _merge(ours, theirs)
    assert merged == ours
    assert decisions == [
        Decision("driver_id", Source.MERIDIAN, Rule.STATE_MACHINE),
        Decision("status", Source.MERIDIAN, Rule.STATE_MACHINE),
    ]


def test_a_status_only_the_monolith_moved_never_leaves_a_final_state() -> None:
    delivered = {**BASE_PARCEL, "status": "DELIVERED"}
    base = Base.of(delivered, delivered)
    merged, decisions = merge(
        base, delivered, {**delivered, "status": "CREATED"}, T0, LATER, has_status=True
    )
    assert merged["status"] == "DELIVERED"
    assert decisions == [Decision("status", Source.MERIDIAN, Rule.FINAL_STATE)]


def test_a_field_neither_changed_since_meridian_won_it_stays_meridians() -> None:
    # Meridian won the address before; the push does not carry addresses back.
    base = Base.of(BASE_PARCEL, {**BASE_PARCEL, "address": "3 MG Road"})
    current = {**BASE_PARCEL, "address": "3 MG Road"}
    assert merge(base, current, BASE_PARCEL, T0, LATER, has_status=True) == (current, [])


# A status Meridian cannot express -------------------------------------------------------------


def test_a_monolith_assignment_without_a_route_keeps_meridians_status() -> None:
    before = {"status": "CREATED", "driver_id": None, "vehicle_id": None, "weight_kg": 1.0}
    merged = {"status": "ASSIGNED", "driver_id": "d-9", "vehicle_id": "v-9", "weight_kg": 2.0}
    earlier = [Decision("weight_kg", Source.MONOLITH, Rule.LAST_WRITER)]
    kept, decisions, missing = keep_expressible(before, merged, {"route_id": None}, earlier)
    assert kept == {**before, "weight_kg": 2.0} and missing == ["route_id"]
    assert [(d.field, d.rule) for d in decisions] == [
        ("driver_id", Rule.INEXPRESSIBLE),
        ("status", Rule.INEXPRESSIBLE),
        ("vehicle_id", Rule.INEXPRESSIBLE),
        ("weight_kg", Rule.LAST_WRITER),
    ]
    on_route = keep_expressible(before, merged, {"route_id": "r-1"}, [])
    assert on_route == (merged, [], [])
