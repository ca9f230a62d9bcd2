"""Client webhook routes: register, list, read, delete, the delivery log and replay of failed
deliveries (use cases in ``handlers/webhooks.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from services.command.handlers import Deps
from services.command.handlers import webhooks as handlers
from services.command.routes.common import AuthenticatedRoute, Caller, accepted, declared


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2048, examples=["https://hooks.example.com/meridian"])
    event_types: list[str] = Field(default_factory=list, max_length=50, description="empty: all")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: datetime | None = None


_PREFIX = "/v1/clients/{client_id}/webhooks"
_CREATED = {
    "headers": {
        "Location": {
            "description": f"the endpoint registered, {_PREFIX}/{{webhook_id}}",
            "required": True,
            "schema": {"type": "string"},
        }
    }
}


def router() -> APIRouter:
    routes = APIRouter(
        prefix=_PREFIX,
        tags=["webhooks"],
        route_class=AuthenticatedRoute,
    )

    @routes.post("", status_code=201, responses={**declared(409), 201: _CREATED})
    async def register(
        client_id: str, body: WebhookRequest, request: Request, caller: Caller
    ) -> JSONResponse:
        deps: Deps = request.app.state.deps
        endpoint = await run_in_threadpool(
            handlers.register_endpoint,
            caller,
            client_id,
            body.url,
            body.event_types,
            deps,
        )
        return JSONResponse(
            {**endpoint, "created_at": endpoint["created_at"].isoformat()},
            status_code=201,
            headers={"Location": f"/v1/clients/{client_id}/webhooks/{endpoint['webhook_id']}"},
        )

    @routes.get("", responses=declared())
    async def list_endpoints(client_id: str, request: Request, caller: Caller) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        endpoints = await run_in_threadpool(handlers.list_endpoints, caller, client_id, deps)
        return {"webhooks": endpoints}

    @routes.get("/{webhook_id}", responses=declared(404))
    async def get_endpoint(
        client_id: str, webhook_id: str, request: Request, caller: Caller
    ) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(handlers.get_endpoint, caller, client_id, webhook_id, deps)

    @routes.delete("/{webhook_id}", status_code=204, responses=declared(404))
    async def delete_endpoint(
        client_id: str, webhook_id: str, request: Request, caller: Caller
    ) -> Response:
        deps: Deps = request.app.state.deps
        await run_in_threadpool(handlers.delete_endpoint, caller, client_id, webhook_id, deps)
        return Response(status_code=204)

    @routes.get("/{webhook_id}/deliveries", responses=declared(404))
    async def deliveries(
        client_id: str, webhook_id: str, request: Request, caller: Caller
    ) -> dict[str, Any]:
        deps: Deps = request.app.state.deps
        log = await run_in_threadpool(handlers.delivery_log, caller, client_id, webhook_id, deps)
        return {"deliveries": log}

    @routes.post(
        "/{webhook_id}/replay",
        status_code=202,
        responses=declared(404, location=f"{_PREFIX}/{{webhook_id}}/deliveries"),
    )
    async def replay(
        client_id: str,
        webhook_id: str,
        request: Request,
        caller: Caller,
        body: ReplayRequest | None = None,
    ) -> JSONResponse:
        deps: Deps = request.app.state.deps
        since = body.since if body else None
        count = await run_in_threadpool(handlers.replay, caller, client_id, webhook_id, since, deps)
        return accepted(
            {"webhook_id": webhook_id, "replayed": count, "at": datetime.now(UTC).isoformat()},
            f"/v1/clients/{client_id}/webhooks/{webhook_id}/deliveries",
        )

    return routes
