"""What every command-service route shares: who is calling, the idempotency key, 202 answers.

Route modules (``app.py`` and the feature routers it includes) import these; handlers never do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from meridian.auth import Actor, IdentityVerifier
from meridian.domain.errors import Unauthenticated
from meridian.idempotency import RequestKey
from services.command import handlers
from services.command.handlers import Deps


async def _caller(request: Request) -> Actor:
    """Drivers and dispatchers send a bearer token; client systems send an API key.

    Read straight from the headers rather than declared as header parameters: every route runs
    this, and FastAPI's per-parameter validation of two optional strings was a measurable share
    of a ``:deliver``. The OpenAPI document declares both as security schemes instead
    (``document_credentials``)."""
    headers = request.headers
    if authorization := headers.get("authorization"):
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Authorization must be 'Bearer <token>'")
        verifier: IdentityVerifier = request.app.state.verifier
        return verifier.verify(token)
    if x_api_key := headers.get("x-api-key"):
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(handlers.client_for_api_key, x_api_key, deps.store)
    raise Unauthenticated(
        "send a bearer token (drivers, dispatchers) or an X-API-Key (client systems)"
    )


def document_credentials(app: FastAPI) -> None:
    """Declare the two ways to authenticate in the OpenAPI document, once for every route."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that a route reads itself (FastAPI's documented
    way: the route takes the ``Request``). The model's schema must be self-contained (no
    ``$ref``s), which ``json_request_body`` checks."""
    schema = model.model_json_schema()
    if "$defs" in schema:
        raise ValueError(f"{model.__name__}'s schema refers to other models; document it inline")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


Caller = Annotated[Actor, Depends(_caller)]
IdempotencyKey = Annotated[str | None, Header(max_length=255)]


async def request_key(request: Request, caller: Actor, key: str | None) -> RequestKey | None:
    """The ledger key of this request, if the client sent an ``Idempotency-Key``."""
    if not key:
        return None
    body = await request.body()
    # The scope's path, not ``request.url.path``: the same text for every path a route accepts,
    # without parsing a whole URL on each request.
    path = request.scope["path"]
    return RequestKey.of(f"{caller.role}:{caller.subject}", key, request.method, path, body)


def accepted(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=202)
