"""The executions and callbacks HTTP API, shaped like Workflow Executions (reference §6.9-6.10).

Entrypoints only parse, call the engine and map the core's errors to status codes.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from meridian.domain.errors import Conflict, NotFound, ValidationError
from meridian.ports import Execution

from . import records
from .engine import WorkflowEngine


def execution_json(engine: WorkflowEngine, execution: Execution) -> dict[str, Any]:
    name = (
        f"projects/{engine.project}/locations/{engine.location}/workflows/"
        f"{execution.workflow}/executions/{execution.execution_id}"
    )
    body: dict[str, Any] = {
        "name": name,
        "executionId": execution.execution_id,
        "workflow": execution.workflow,
        "state": execution.state,
        "argument": json.dumps(execution.argument),
        "startTime": execution.start_time.isoformat().replace("+00:00", "Z"),
        "endTime": execution.end_time.isoformat().replace("+00:00", "Z")
        if execution.end_time
        else None,
    }
    if execution.state == "SUCCEEDED":
        body["result"] = json.dumps(records.plain(execution.result))
    if execution.error is not None:
        body["error"] = execution.error
    return body


def _status(e: Exception) -> HTTPException:
    if isinstance(e, NotFound):
        return HTTPException(404, str(e))
    if isinstance(e, Conflict):
        return HTTPException(429, str(e))
    return HTTPException(400, str(e))


def create_router(engine: WorkflowEngine) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/workflows/{workflow}/executions")
    async def create_execution(workflow: str, request: Request) -> dict[str, Any]:
        payload = await _json(request)
        argument = payload.get("argument", {})
        if isinstance(argument, str):
            argument = json.loads(argument) if argument else {}
        execution_id = payload.get("executionId") or request.query_params.get("executionId")
        try:
            execution = await run_in_threadpool(engine.start, workflow, argument, execution_id)
        except (NotFound, ValidationError) as e:
            raise _status(e) from e
        return execution_json(engine, execution)

    @router.get("/v1/executions/{execution_id}")
    async def get_execution(execution_id: str) -> dict[str, Any]:
        try:
            return execution_json(engine, await run_in_threadpool(engine.get, execution_id))
        except NotFound as e:
            raise _status(e) from e

    @router.get("/v1/executions")
    async def list_executions(workflow: str, state: str | None = None) -> dict[str, Any]:
        found = await run_in_threadpool(engine.list, workflow, state)
        return {"executions": [execution_json(engine, e) for e in found]}

    @router.post("/v1/executions/{execution_id}:cancel")
    async def cancel_execution(execution_id: str) -> dict[str, Any]:
        try:
            return execution_json(engine, await run_in_threadpool(engine.cancel, execution_id))
        except NotFound as e:
            raise _status(e) from e

    @router.get("/v1/executions/{execution_id}/steps")
    async def execution_steps(execution_id: str) -> dict[str, Any]:
        try:
            return {"steps": await run_in_threadpool(engine.steps, execution_id)}
        except NotFound as e:
            raise _status(e) from e

    @router.api_route(
        "/v1/callbacks/{execution_id}/{callback_id}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    )
    async def callback(execution_id: str, callback_id: str, request: Request) -> dict[str, Any]:
        raw = await request.body()
        body: Any = None
        if raw:
            content_type = request.headers.get("content-type", "")
            text = raw.decode(errors="replace")
            body = json.loads(text) if "json" in content_type else text
        url = f"{engine.base_url}/v1/callbacks/{execution_id}/{callback_id}"
        try:
            await run_in_threadpool(
                engine.deliver_callback,
                url,
                request.method,
                body,
                dict(request.headers),
                dict(request.query_params),
            )
        except (NotFound, Conflict, ValidationError, ValueError) as e:
            raise _status(e) from e
        return {}

    return router


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        payload = json.loads(raw)
    except ValueError as e:
        raise HTTPException(400, f"body is not JSON: {e}") from e
    if not isinstance(payload, dict):
        raise HTTPException(400, "body must be a JSON object")
    return payload


def create_app(engine: WorkflowEngine) -> FastAPI:
    """The engine's HTTP app. The engine is opened on startup and closed on shutdown."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(engine.open)
        try:
            yield
        finally:
            await run_in_threadpool(engine.close)

    app = FastAPI(title="Meridian embedded Workflows", lifespan=lifespan)
    app.include_router(create_router(engine))
    return app
