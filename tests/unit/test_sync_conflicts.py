"""The bridge's conflict rules, one decision at a time (services/sync/conflicts.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.sync.conflicts import Rule, Source, decide_status, resolve

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
