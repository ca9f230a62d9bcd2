"""What every command-service route shares: who is calling, the idempotency key, 202 answers.

Route modules (``app.py`` and the feature routers it includes) import these; handlers never do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meridian.auth import Actor, IdentityVerifier
from meridian.domain.errors import Unauthenticated
from meridian.idempotency import RequestKey
from services.command import handlers
from services.command.handlers import Deps


async def _caller(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Actor:
    """Drivers and dispatchers send a bearer token; client systems send an API key."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Authorization must be 'Bearer <token>'")
        verifier: IdentityVerifier = request.app.state.verifier
        return verifier.verify(token)
    if x_api_key:
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(handlers.client_for_api_key, x_api_key, deps.store)
    raise Unauthenticated(
        "send a bearer token (drivers, dispatchers) or an X-API-Key (client systems)"
    )


Caller = Annotated[Actor, Depends(_caller)]
IdempotencyKey = Annotated[str | None, Header(max_length=255)]


async def request_key(request: Request, caller: Actor, key: str | None) -> RequestKey | None:
    """The ledger key of this request, if the client sent an ``Idempotency-Key``."""
    if not key:
        return None
    body = await request.body()
    return RequestKey.of(
        f"{caller.role}:{caller.subject}", key, request.method, request.url.path, body
    )


def accepted(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=202)
