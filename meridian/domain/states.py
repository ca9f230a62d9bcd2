"""The parcel state machine, as an explicit transition table.

CREATED → PLANNED → ASSIGNED → OUT_FOR_DELIVERY → DELIVERED | DELIVERY_FAILED;
a failed delivery is re-queued (back to CREATED, for the next dispatch window) or RETURNED.
Dispatch compensation also re-queues parcels that were planned or assigned but never left.
"""

from __future__ import annotations

from enum import StrEnum

from meridian.domain.errors import InvalidTransition


class ParcelStatus(StrEnum):
    CREATED = "CREATED"
    PLANNED = "PLANNED"
    ASSIGNED = "ASSIGNED"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    DELIVERY_FAILED = "DELIVERY_FAILED"
    RETURNED = "RETURNED"


class ParcelMove(StrEnum):
    """The moves a parcel can be asked to make; each is one command of the platform."""

    PLAN = "plan"
    ASSIGN = "assign"
    SEND_OUT = "send out for delivery"
    DELIVER = "deliver"
    FAIL = "fail delivery of"
    REQUEUE = "re-queue"
    RETURN = "return"


S, M = ParcelStatus, ParcelMove

PARCEL_TRANSITIONS: dict[tuple[ParcelStatus, ParcelMove], ParcelStatus] = {
    (S.CREATED, M.PLAN): S.PLANNED,
    (S.PLANNED, M.ASSIGN): S.ASSIGNED,
    (S.ASSIGNED, M.SEND_OUT): S.OUT_FOR_DELIVERY,
    (S.OUT_FOR_DELIVERY, M.DELIVER): S.DELIVERED,
    (S.OUT_FOR_DELIVERY, M.FAIL): S.DELIVERY_FAILED,
    (S.DELIVERY_FAILED, M.REQUEUE): S.CREATED,
    (S.DELIVERY_FAILED, M.RETURN): S.RETURNED,
    # Dispatch compensation: a route that was never confirmed gives its parcels back.
    (S.PLANNED, M.REQUEUE): S.CREATED,
    (S.ASSIGNED, M.REQUEUE): S.CREATED,
}

TERMINAL_STATES = frozenset({S.DELIVERED, S.RETURNED})

del S, M


def allowed_moves(state: ParcelStatus) -> tuple[ParcelMove, ...]:
    return tuple(move for (origin, move) in PARCEL_TRANSITIONS if origin == state)


def next_status(state: ParcelStatus, move: ParcelMove, parcel_id: str = "") -> ParcelStatus:
    """The state a parcel in ``state`` reaches by ``move``; raises InvalidTransition otherwise."""
    try:
        return PARCEL_TRANSITIONS[(state, move)]
    except KeyError:
        entity = f"parcel {parcel_id}" if parcel_id else "parcel"
        raise InvalidTransition(
            entity, state.value, move.value, [m.value for m in allowed_moves(state)]
        ) from None
