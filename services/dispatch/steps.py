"""The saga's step table: each step's name (``/v1/steps/{name}``), its command and its handler,
and how one step runs under the workflow's idempotency key.

A step's body is validated into its command here, so a bad body is refused with every field's
error named before any step runs. A step spans several transactions, so its ledger entry (the
request ledger of ``meridian/app/idempotency.py``) is read before it starts and written once it is
done, through ``LedgerWriter`` so that steps finishing together share one write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic

from meridian.app.idempotency import RequestKey, replayed_response, request_entry
from meridian.domain import dispatch as cmd
from meridian.domain.errors import AlreadyExists, FieldError, ValidationError
from services.dispatch.handlers import (
    SAGA,
    Answer,
    Deps,
    answers,
    compensation,
    offers,
    outcome,
    planning,
)

C = TypeVar("C", bound=cmd.DispatchCommand)


@dataclass(frozen=True)
class Step(Generic[C]):
    command: type[C]
    handle: Callable[[C, Deps], Answer]


STEPS: dict[str, Step[Any]] = {
    "reserve": Step(cmd.ReserveWindow, planning.reserve),
    "optimize": Step(cmd.OptimizeRoutes, planning.optimize),
    "assign": Step(cmd.AssignRoutes, planning.assign),
    "offer": Step(cmd.OfferRoute, offers.offer),
    "offer_routes": Step(cmd.OfferRoutes, offers.offer_routes),
    "confirm": Step(cmd.ConfirmAssignment, answers.confirm),
    "decline": Step(cmd.DeclineAssignment, answers.decline),
    "release": Step(cmd.ReleaseRoutes, compensation.release),
    "requeue": Step(cmd.RequeueParcels, compensation.requeue),
    "complete": Step(cmd.CompleteDispatch, outcome.complete),
    "fail": Step(cmd.FailDispatch, outcome.fail),
}


def parse(name: str, body: Mapping[str, Any]) -> cmd.DispatchCommand:
    """The step's command from its JSON body; ValidationError names every field in error."""
    try:
        command: cmd.DispatchCommand = STEPS[name].command.model_validate(body)
    except pydantic.ValidationError as e:
        raise ValidationError(
            f"invalid {name} step",
            [FieldError(".".join(str(p) for p in err["loc"]), err["msg"]) for err in e.errors()],
        ) from e
    return command


def run_step(
    name: str, key: str | None, command: cmd.DispatchCommand, deps: Deps
) -> dict[str, Any]:
    """Run one step under its idempotency key: the first answer is stored and replayed; the same
    key with another command is refused (IdempotencyMismatch: a bug in the workflow, not a
    retry)."""
    step = STEPS[name]
    if not isinstance(command, step.command):
        raise TypeError(f"the {name} step takes a {step.command.__name__}")
    request = (
        RequestKey.of(
            SAGA.subject, key, "POST", f"/v1/steps/{name}", command.model_dump_json().encode()
        )
        if key
        else None
    )
    replayed = replayed_response(deps.store, request)
    if replayed is not None:
        return replayed
    response, events = step.handle(command, deps)
    if events:
        messages = [deps.codec.to_message(e) for e in events]
        for topic, batch in deps.codec.by_topic(messages).items():
            deps.publisher.publish(topic, batch)
    if request is not None:
        entry = request_entry(request, response, deps.clock())
        if deps.ledger is not None:
            deps.ledger.create(request.path, entry)
        else:
            # AlreadyExists: a concurrent retry finished first; both answers are the same by
            # construction
            with contextlib.suppress(AlreadyExists):
                deps.store.create(request.path, entry)
    return response
