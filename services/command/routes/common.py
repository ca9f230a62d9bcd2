"""What every command-service route shares: who is calling, the idempotency key, the hot routes'
own reading and documenting of their inputs, the errors every route declares (``declared``), 202
answers with the ``Location`` of their status resource.

Authentication comes before anything of the request is judged (401 before a 422 or a 400 could
tell an anonymous caller what the route expects): the hot routes call ``authenticate`` first, and
every other route is an ``AuthenticatedRoute``, which does so before FastAPI reads its body and
parameters. The route modules beside this one import it; handlers never do.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import pydantic
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from meridian.app.auth import bearer_token
from meridian.app.idempotency import RequestKey
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.domain.model import Identifier
from meridian.edge.problems import problem_responses
from meridian.ports import IdentityVerifier
from services.command.handlers import Deps, client_for_api_key


async def authenticate(request: Request) -> Actor:
    """Drivers and dispatchers send a bearer token; client systems send an API key.

    Read straight from the headers rather than declared as header parameters: every route runs
    this, and FastAPI's per-parameter validation of two optional strings was a measurable share
    of a ``:deliver``. The OpenAPI document declares both as security schemes instead
    (``document_credentials``)."""
    headers = request.headers
    if authorization := headers.get("authorization"):
        verifier: IdentityVerifier = request.app.state.verifier
        return verifier.verify(bearer_token(authorization))
    if x_api_key := headers.get("x-api-key"):
        deps: Deps = request.app.state.deps
        return await run_in_threadpool(client_for_api_key, x_api_key, deps.store)
    raise Unauthenticated(
        "send a bearer token (drivers, dispatchers) or an X-API-Key (client systems)"
    )


class AuthenticatedRoute(APIRoute):
    """A route whose caller is authenticated before FastAPI reads the request: FastAPI parses a
    declared body, and checks path and header parameters, before it runs any dependency, so a
    ``Depends(authenticate)`` alone would answer an anonymous caller's malformed body 400. The
    caller is then the ``Caller`` parameter. (FastAPI's documented way to wrap a route's handler.)
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            request.state.caller = await authenticate(request)
            return await handle(request)

        return authenticated


async def _authenticated_caller(request: Request) -> Actor:
    caller: Actor | None = getattr(request.state, "caller", None)
    return caller if caller is not None else await authenticate(request)


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


# Hot routes (the parcel moves, telemetry) --------------------------------------------------------
#
# These take the ``Request`` and read their credentials, body and Idempotency-Key themselves
# instead of declaring them as parameters: FastAPI's dependency and parameter machinery was a
# sixth of the CPU of a ``:deliver``, and a body validated in one pass from the JSON bytes costs
# a third of parsing it into dicts and validating those. ``documented`` puts the same body and
# header in the OpenAPI document, and errors are the same problem documents.

MAX_IDEMPOTENCY_KEY = 255
M = TypeVar("M", bound=BaseModel)


class RequestBody(BaseModel):
    """A command's JSON body: no unknown fields, strings stripped like the domain's values, so
    "reason": "\\r" is refused here, at the body, with the field named, instead of when the
    command is built from an already accepted body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


async def read_json(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; refused like a declared body (400 malformed JSON,
    422 with every field error)."""
    body = await request.body()
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in e.errors(include_url=False)]
        ) from None


_IDENTIFIER: pydantic.TypeAdapter[str] = pydantic.TypeAdapter(Identifier)


def path_identifier(request: Request, name: str) -> str:
    """The path parameter ``name``, which must be an ``Identifier`` (422 otherwise)."""
    value = request.path_params[name]
    try:
        return _IDENTIFIER.validate_python(value)
    except pydantic.ValidationError as e:
        raise RequestValidationError(
            [{**error, "loc": ("path", name)} for error in e.errors(include_url=False)]
        ) from None


async def parcel_move(request: Request, model: type[M]) -> tuple[str, Actor, M]:
    """What every parcel move reads: the caller, the parcel id and the body ``model``, checked in
    that order (credentials before anything else, the path before the body)."""
    caller = await authenticate(request)
    parcel_id = path_identifier(request, "parcel_id")
    return parcel_id, caller, await read_json(request, model)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": ("header", "idempotency-key"),
                    "msg": f"String should have at most {MAX_IDEMPOTENCY_KEY} characters",
                    "input": key,
                }
            ]
        )
    return key or None


def documented(
    body: type[BaseModel], idempotent: bool = True, path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``openapi_extra`` for a hot route: its JSON body (FastAPI's documented way to describe a
    body the route reads itself), its ``Identifier`` path parameters and, for commands, the
    Idempotency-Key header."""
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inlined(body.model_json_schema())}},
        },
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": _IDENTIFIER.json_schema()}
            for name in path
        ],
    }
    if idempotent:
        extra["parameters"] += [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "a retry with the same key and body gets the first response",
                "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
            }
        ]
    return extra


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references replaced by the definitions (an OpenAPI
    document resolves ``#/$defs/…`` from its own root, where they are not)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**definitions[ref.removeprefix("#/$defs/")], **rest})
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# The caller an ``AuthenticatedRoute`` authenticated.
Caller = Annotated[Actor, Depends(_authenticated_caller)]
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


def accepted(body: dict[str, Any], location: str | None = None) -> JSONResponse:
    """A 202; ``location``: the status resource that follows what was accepted."""
    headers = {"Location": location} if location is not None else None
    return JSONResponse(body, status_code=202, headers=headers)


# What any route of the service can answer: a malformed body or Content-Length (400), no or bad
# credentials (401), a caller who may not (403), a body over its limit (413), invalid input
# (422), the store or another dependency down (503).
COMMON_ERRORS = (400, 401, 403, 413, 422, 503)


def declared(*errors: int, location: str | None = None) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for the OpenAPI document: ``COMMON_ERRORS`` and ``errors`` as
    problems; ``location``, the status resource its 202 names in ``Location``."""
    responses = problem_responses(*sorted({*COMMON_ERRORS, *errors}))
    if location is not None:
        responses[202] = {
            "headers": {
                "Location": {
                    "description": f"the status resource, {location}",
                    "required": True,
                    "schema": {"type": "string"},
                }
            }
        }
    return responses
