"""The migration bridge's on-demand route: ``POST /v1/sync-requests`` (operator role) publishes a
``SyncRequested`` for the sync pipeline; use case in ``handlers/sync.py``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meridian.app.sync_requests import RequestSync
from services.command.handlers import Deps
from services.command.handlers import sync as handlers
from services.command.routes.common import AuthenticatedRoute, Caller, accepted, declared


def router() -> APIRouter:
    routes = APIRouter(tags=["migration"], route_class=AuthenticatedRoute)

    @routes.post("/v1/sync-requests", status_code=202, responses=declared())
    async def request_sync(body: RequestSync, request: Request, caller: Caller) -> JSONResponse:
        """Bring rows of the legacy monolith into Meridian now: `ids`, or the changes `since` a
        time, or (neither) every row of `entity`. Answers with the run's `request_id`, which
        its SyncStarted, SyncEnded or SyncError events carry."""
        deps: Deps = request.app.state.deps
        return accepted(await run_in_threadpool(handlers.request_sync, body, caller, deps))

    return routes
