"""Dispatch routes of the command service: open a dispatch window (starts the saga), follow it,
and drivers' answers to route offers (sent to the saga as callbacks); use cases in
``handlers/dispatch.py``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from meridian.domain.errors import Unavailable
from meridian.domain.model import GeoPoint, Identifier, TimeWindow
from meridian.ports import WorkflowExecutions
from services.command.handlers import Deps
from services.command.handlers import dispatch as handlers
from services.command.routes.common import (
    AuthenticatedRoute,
    Caller,
    IdempotencyKey,
    accepted,
    declared,
    request_key,
)


class OpenWindowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_id: Identifier | None = None
    depot: GeoPoint
    window: TimeWindow
    max_offers: int = Field(
        default=3, ge=1, le=10, description="offers per route before giving it back"
    )
    offer_timeout_s: float = Field(
        default=900, gt=0, le=43200, description="how long a driver has to answer"
    )
    solve_time_limit_s: float = Field(
        default=10, gt=0, le=600, description="route optimiser time limit"
    )


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


def _workflows(request: Request) -> WorkflowExecutions:
    """The executions port bootstrap put in app state (a fake in unit tests)."""
    workflows: WorkflowExecutions | None = getattr(request.app.state, "workflows", None)
    if workflows is None:
        raise Unavailable(
            "dispatch windows need a Workflows executions adapter; none was configured"
        )
    return workflows


def router() -> APIRouter:
    routes = APIRouter(tags=["dispatch"], route_class=AuthenticatedRoute)

    @routes.post(
        "/v1/dispatch-windows",
        status_code=202,
        responses=declared(409, location="/v1/dispatch-windows/{window_id}"),
    )
    async def open_window(
        body: OpenWindowRequest,
        request: Request,
        caller: Caller,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        deps: Deps = request.app.state.deps
        cmd = handlers.OpenWindow(
            depot=body.depot,
            window=body.window,
            window_id=body.window_id,
            max_offers=body.max_offers,
            offer_timeout_s=body.offer_timeout_s,
            solve_time_limit_s=body.solve_time_limit_s,
        )
        key = await request_key(request, caller, idempotency_key)
        answer = await run_in_threadpool(
            handlers.open_window, cmd, caller, deps, _workflows(request), key
        )
        return accepted(answer, answer["status_url"])

    @routes.get("/v1/dispatch-windows/{window_id}", responses=declared(404))
    async def get_window(window_id: str, request: Request, caller: Caller) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(
            handlers.window_status, window_id, caller, deps, _workflows(request)
        )

    async def _answer(
        assignment_id: str,
        decision: handlers.Decision,
        body: AnswerRequest | None,
        request: Request,
        caller: Caller,
    ) -> JSONResponse:
        deps: Deps = request.app.state.deps
        reason = body.reason if body else None
        return accepted(
            await run_in_threadpool(
                handlers.answer_offer,
                assignment_id,
                decision,
                reason,
                caller,
                deps,
                _workflows(request),
            )
        )

    # An answer is relayed to the saga, whose window is the status resource; the answer's 202
    # has no Location, since the assignment does not name its window.
    @routes.post(
        "/v1/assignments/{assignment_id}:accept", status_code=202, responses=declared(404, 409)
    )
    async def accept(
        assignment_id: Identifier,
        request: Request,
        caller: Caller,
        body: AnswerRequest | None = None,
    ) -> JSONResponse:
        return await _answer(assignment_id, "accept", body, request, caller)

    @routes.post(
        "/v1/assignments/{assignment_id}:decline", status_code=202, responses=declared(404, 409)
    )
    async def decline(
        assignment_id: Identifier,
        request: Request,
        caller: Caller,
        body: AnswerRequest | None = None,
    ) -> JSONResponse:
        return await _answer(assignment_id, "decline", body, request, caller)

    return routes
