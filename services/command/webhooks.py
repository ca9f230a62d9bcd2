"""Client webhook endpoints: register (the answer carries the ``whsec_`` secret, shown once),
list, read, delete, read the delivery log, and replay failed deliveries. A client manages only
its own endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from meridian.app import webhooks
from meridian.domain.actors import Actor
from meridian.domain.errors import PermissionDenied
from services.command.handlers import Deps
from services.command.web import Caller


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2048)
    event_types: list[str] = Field(default_factory=list, max_length=50, description="empty: all")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: datetime | None = None


def _own(caller: Actor, client_id: str) -> None:
    caller.require("client")
    if caller.subject != client_id:
        raise PermissionDenied(f"client {caller.subject} cannot manage the webhooks of {client_id}")


def router() -> APIRouter:
    routes = APIRouter(prefix="/v1/clients/{client_id}/webhooks", tags=["webhooks"])

    @routes.post("", status_code=201)
    async def register(
        client_id: str, body: WebhookRequest, request: Request, caller: Caller
    ) -> JSONResponse:
        _own(caller, client_id)
        deps: Deps = request.app.state.deps
        endpoint = await run_in_threadpool(
            webhooks.register_endpoint,
            deps.store,
            client_id,
            body.url,
            body.event_types,
            webhooks.AllowList.from_env(),
            deps.clock(),
        )
        return JSONResponse(
            {**endpoint, "created_at": endpoint["created_at"].isoformat()},
            status_code=201,
            headers={"Location": f"/v1/clients/{client_id}/webhooks/{endpoint['webhook_id']}"},
        )

    @routes.get("")
    async def list_endpoints(client_id: str, request: Request, caller: Caller) -> dict[str, Any]:
        _own(caller, client_id)
        deps: Deps = request.app.state.deps
        return {"webhooks": await run_in_threadpool(webhooks.list_endpoints, deps.store, client_id)}

    @routes.get("/{webhook_id}")
    async def get_endpoint(
        client_id: str, webhook_id: str, request: Request, caller: Caller
    ) -> dict[str, Any]:
        _own(caller, client_id)
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(webhooks.get_endpoint, deps.store, client_id, webhook_id)

    @routes.delete("/{webhook_id}", status_code=204)
    async def delete_endpoint(
        client_id: str, webhook_id: str, request: Request, caller: Caller
    ) -> Response:
        _own(caller, client_id)
        deps: Deps = request.app.state.deps
        await run_in_threadpool(webhooks.delete_endpoint, deps.store, client_id, webhook_id)
        return Response(status_code=204)

    @routes.get("/{webhook_id}/deliveries")
    async def deliveries(
        client_id: str, webhook_id: str, request: Request, caller: Caller
    ) -> dict[str, Any]:
        _own(caller, client_id)
        deps: Deps = request.app.state.deps
        log = await run_in_threadpool(webhooks.delivery_log, deps.store, client_id, webhook_id)
        return {"deliveries": log}

    @routes.post("/{webhook_id}/replay", status_code=202)
    async def replay(
        client_id: str,
        webhook_id: str,
        request: Request,
        caller: Caller,
        body: ReplayRequest | None = None,
    ) -> JSONResponse:
        _own(caller, client_id)
        deps: Deps = request.app.state.deps
        since = body.since if body else None
        count = await run_in_threadpool(
            webhooks.replay, deps.store, client_id, webhook_id, since, deps.clock()
        )
        return JSONResponse(
            {"webhook_id": webhook_id, "replayed": count, "at": datetime.now(UTC).isoformat()},
            status_code=202,
        )

    return routes
