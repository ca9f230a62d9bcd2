"""Dispatch schedule routes: the desk defines, lists, reads and deletes recurring windows, and the
scheduler fires them (``POST /v1/dispatch-schedules:fire``, every minute); use cases in
``handlers/schedules.py``.

Only ``Settings.scheduler_identity`` may fire, with an OIDC token whose audience is
``FIRE_AUDIENCE``: a fixed name rather than a URL, because the command service is public and
reached through the load balancer by the platform's domain, so it knows no URL of its own that
Cloud Scheduler's job (terraform/modules/meridian/schedules.tf) would sign for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meridian.domain.errors import Unavailable
from meridian.domain.schedules import DispatchSchedule
from meridian.ports import PushAuthenticator
from services.command.handlers import Deps
from services.command.handlers import schedules as handlers
from services.command.routes.common import AuthenticatedRoute, Caller, declared
from services.command.routes.dispatch import _workflows

FIRE_PATH = "/v1/dispatch-schedules:fire"
FIRE_AUDIENCE = "meridian/dispatch-schedules:fire"
_PREFIX = "/v1/dispatch-schedules"
_CREATED = {
    "headers": {
        "Location": {
            "description": f"the schedule, {_PREFIX}/{{schedule_id}}",
            "required": True,
            "schema": {"type": "string"},
        }
    }
}


@dataclass(frozen=True)
class SchedulerCalls:
    """Who may fire the schedules: the check of the scheduler's OIDC token (bootstrap builds it)."""

    auth: PushAuthenticator


def router(scheduler: SchedulerCalls | None) -> APIRouter:
    desk = APIRouter(tags=["dispatch"], route_class=AuthenticatedRoute)

    @desk.post(_PREFIX, status_code=201, responses={**declared(409), 201: _CREATED})
    async def create_schedule(
        body: DispatchSchedule, request: Request, caller: Caller
    ) -> JSONResponse:
        deps: Deps = request.app.state.deps
        shown = await run_in_threadpool(handlers.create_schedule, body, caller, deps)
        return JSONResponse(
            shown,
            status_code=201,
            headers={"Location": f"{_PREFIX}/{body.schedule_id}"},
        )

    @desk.get(_PREFIX, responses=declared())
    async def list_schedules(request: Request, caller: Caller) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        return {"schedules": await run_in_threadpool(handlers.list_schedules, caller, deps)}

    @desk.get(f"{_PREFIX}/{{schedule_id}}", responses=declared(404))
    async def get_schedule(schedule_id: str, request: Request, caller: Caller) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(handlers.get_schedule, schedule_id, caller, deps)

    @desk.delete(f"{_PREFIX}/{{schedule_id}}", status_code=204, responses=declared(404))
    async def delete_schedule(schedule_id: str, request: Request, caller: Caller) -> Response:
        deps: Deps = request.app.state.deps
        await run_in_threadpool(handlers.delete_schedule, schedule_id, caller, deps)
        return Response(status_code=204)

    # Not a desk route, nor part of the API's document (as the ETA reactor's tick): the
    # scheduler's token is an OIDC token of its service account, not a user's, so it is checked
    # here instead of by ``AuthenticatedRoute``.
    fire_routes = APIRouter()

    @fire_routes.post(FIRE_PATH, include_in_schema=False)
    async def fire(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, list[str]]:
        if scheduler is None:
            raise Unavailable("no scheduler identity is configured to fire dispatch schedules")
        scheduler.auth.check(authorization, FIRE_AUDIENCE)
        deps: Deps = request.app.state.deps
        opened = await run_in_threadpool(handlers.fire, deps, _workflows(request))
        return {"opened": opened}

    desk.include_router(fire_routes)
    return desk
