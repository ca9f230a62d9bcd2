"""The parcel state machine: every (state, move) pair is either in the table or refused."""

from __future__ import annotations

import itertools

import pytest

from meridian.domain.errors import Conflict, InvalidTransition
from meridian.domain.states import (
    PARCEL_TRANSITIONS,
    TERMINAL_STATES,
    ParcelMove,
    ParcelStatus,
    allowed_moves,
    next_status,
)

S, M = ParcelStatus, ParcelMove

LEGAL = [
    (S.CREATED, M.PLAN, S.PLANNED),
    (S.PLANNED, M.ASSIGN, S.ASSIGNED),
    (S.ASSIGNED, M.SEND_OUT, S.OUT_FOR_DELIVERY),
    (S.OUT_FOR_DELIVERY, M.DELIVER, S.DELIVERED),
    (S.OUT_FOR_DELIVERY, M.FAIL, S.DELIVERY_FAILED),
    (S.DELIVERY_FAILED, M.REQUEUE, S.CREATED),
    (S.DELIVERY_FAILED, M.RETURN, S.RETURNED),
    (S.PLANNED, M.REQUEUE, S.CREATED),
    (S.ASSIGNED, M.REQUEUE, S.CREATED),
]
ILLEGAL = [
    (state, move)
    for state, move in itertools.product(ParcelStatus, ParcelMove)
    if (state, move) not in {(s, m) for s, m, _ in LEGAL}
]


def test_the_table_is_exactly_the_documented_lifecycle() -> None:
    assert {(s, m): t for s, m, t in LEGAL} == PARCEL_TRANSITIONS


@pytest.mark.parametrize(("state", "move", "target"), LEGAL)
def test_legal_transition(state: ParcelStatus, move: ParcelMove, target: ParcelStatus) -> None:
    assert next_status(state, move) == target


@pytest.mark.parametrize(("state", "move"), ILLEGAL)
def test_illegal_transition_names_the_state_and_the_move(
    state: ParcelStatus, move: ParcelMove
) -> None:
    with pytest.raises(InvalidTransition) as raised:
        next_status(state, move, "p-42")
    error = raised.value
    assert isinstance(error, Conflict)
    assert error.state == state.value
    assert error.move == move.value
    assert f"cannot {move.value} parcel p-42: it is {state.value}" in str(error)
    for allowed in allowed_moves(state):
        assert allowed.value in str(error)


def test_terminal_states_allow_no_move() -> None:
    assert {S.DELIVERED, S.RETURNED} == TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert allowed_moves(state) == ()


def test_every_state_is_reachable_from_created() -> None:
    reached, frontier = {S.CREATED}, [S.CREATED]
    while frontier:
        state = frontier.pop()
        for move in allowed_moves(state):
            target = next_status(state, move)
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(ParcelStatus)
