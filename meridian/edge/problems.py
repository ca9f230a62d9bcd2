"""HTTP plumbing every FastAPI service shares: RFC 9457 problem details for every error.

Domain errors map to status codes here, once; handlers never see HTTP. Bad input is always a 4xx
that lists every field error, never a 500. The answers' headers are the ones HTTP asks for: a 401
says how to authenticate (``WWW-Authenticate``), a 405 which methods the path takes (``Allow``), a
503 when to try again (``Retry-After``: ``RETRY_AFTER_S``, or what an ``Overloaded`` service that
shed the request asks).

The same answers are declared in each service's OpenAPI document: ``Problem`` is their schema,
``problem_responses`` a route's declaration of the statuses it can answer (``responses=``), and
``document_problems`` adds the schema to the document and replaces FastAPI's default
``HTTPValidationError`` declaration wherever a route left it (``meridian.edge.fast_routes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from meridian.domain.errors import (
    AlreadyExists,
    Conflict,
    DecodeError,
    IdempotencyMismatch,
    InvalidTransition,
    MeridianError,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from meridian.observability import get_logger

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPES = "https://meridian.dev/problems/"
# Every 503 is a dependency down or overloaded (``Unavailable``): a caller may try again soon.
RETRY_AFTER_S = 5
log = get_logger(__name__)

# Most specific first: the first matching class decides.
STATUS_OF: list[tuple[type[MeridianError], int, str]] = [
    (IdempotencyMismatch, 422, "idempotency-key-reused"),
    (InvalidTransition, 409, "invalid-transition"),
    (AlreadyExists, 409, "already-exists"),
    (Conflict, 409, "conflict"),
    (ValidationError, 422, "invalid-input"),
    (DecodeError, 400, "undecodable"),
    (NotFound, 404, "not-found"),
    (Unauthenticated, 401, "unauthenticated"),
    (PermissionDenied, 403, "forbidden"),
    (Overloaded, 503, "overloaded"),
    (Unavailable, 503, "unavailable"),
]


def problem(
    status: int, slug: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"{PROBLEM_TYPES}{slug}",
        "title": slug.replace("-", " "),
        "status": status,
        "detail": detail,
        **extra,
    }
    if status in _REQUIRED_HEADERS:
        headers = {**_REQUIRED_HEADERS[status], **(headers or {})}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# The headers HTTP asks of an answer of these statuses, whatever raised it.
_REQUIRED_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "Bearer"},
    503: {"Retry-After": str(RETRY_AFTER_S)},
}


def problem_for(error: MeridianError) -> JSONResponse:
    for cls, status, slug in STATUS_OF:
        if isinstance(error, cls):
            extra: dict[str, Any] = {}
            if isinstance(error, ValidationError) and error.errors:
                extra["errors"] = [
                    {"location": e.location, "message": e.message} for e in error.errors
                ]
            if isinstance(error, InvalidTransition):
                extra["current_state"] = error.state
            headers = None
            if isinstance(error, Overloaded):
                headers = {"Retry-After": str(error.retry_after_s)}
            return problem(status, slug, str(error), headers, **extra)
    return problem(500, "internal", "unexpected error")


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(MeridianError)
    async def domain_error(_: Request, error: MeridianError) -> JSONResponse:
        return problem_for(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"location": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in error.errors()
        ]
        malformed = any(e.get("type") == "json_invalid" for e in error.errors())
        status, slug = (400, "malformed-json") if malformed else (422, "invalid-input")
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        return problem(status, slug, detail, errors=errors)

    @app.exception_handler(pydantic.ValidationError)
    async def invalid_value(_: Request, error: pydantic.ValidationError) -> JSONResponse:
        # A domain value built from accepted input refused it: still the caller's input, so 422,
        # never a 500 (the request models should have caught it first; this is the backstop).
        errors = [
            {"location": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in error.errors()
        ]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        return problem(422, "invalid-input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        slug = _HTTP_SLUGS.get(error.status_code, "http-error")
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette's Allow names the methods of the first route that matched the path only.
            methods = allowed_methods(request.app.router.routes, request.scope)
            headers["Allow"] = ", ".join(methods)
        return problem(error.status_code, slug, str(error.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return problem(500, "internal", "unexpected error; it has been logged")


_HTTP_SLUGS = {
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    415: "unsupported-media-type",
}


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(routes: list[BaseRoute], scope: Mapping[str, Any]) -> list[str]:
    """The methods of the resource the router found at the scope's path (the first route that
    matched it): those for which the router would choose that same route. Asked through
    ``matches``, as the router asks: FastAPI's included routers keep their routes to themselves,
    so an included router counts as one route (Starlette's own ``Allow`` names only the methods
    of the first route of the router, where GET and POST of a path may be two)."""
    found = next((route for route in routes if route.matches({**scope})[0] != Match.NONE), None)
    return [method for method in _METHODS if _chosen(routes, scope, method) is found]


def _chosen(routes: list[BaseRoute], scope: Mapping[str, Any], method: str) -> BaseRoute | None:
    asked = {**scope, "method": method}
    return next((route for route in routes if route.matches(asked)[0] == Match.FULL), None)


# The OpenAPI side ------------------------------------------------------------------------------


class InvalidField(BaseModel):
    location: str = Field(description="where: body.parcels.0.stop.lat, path.parcel_id, ...")
    message: str


class Problem(BaseModel):
    """An error answer of a Meridian service (RFC 9457 problem details)."""

    model_config = ConfigDict(extra="allow")  # a problem type may add members (current_state)

    type: str = Field(description=f"the kind of problem, {PROBLEM_TYPES}<slug>")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[InvalidField] | None = Field(
        default=None, description="every field in error (400 malformed, 422 invalid input)"
    )


PROBLEM_REF = "#/components/schemas/Problem"
_DESCRIPTIONS = {
    400: "Malformed: the body is not JSON, or not what the route reads",
    401: "No credentials, or credentials that do not verify",
    403: "The caller may not do this",
    404: "No such resource",
    409: "The request clashes with the resource's current state",
    410: "Gone",
    413: "The body is larger than the route accepts",
    415: "The body is not of a type the route accepts",
    422: "Invalid input: every field in error is listed",
    503: "A dependency is unavailable, or the service is overloaded; try again after Retry-After",
}
_HEADER_DESCRIPTIONS = {
    "WWW-Authenticate": "how to authenticate: Bearer",
    "Retry-After": "seconds to wait before trying again",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: these statuses answered as problems, headers included."""
    return {status: _problem_response(status) for status in statuses}


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    }
    headers = _REQUIRED_HEADERS.get(status, {})
    if headers:
        response["headers"] = {
            name: {
                "description": _HEADER_DESCRIPTIONS[name],
                "required": True,
                "schema": {"type": "string"},
            }
            for name in headers
        }
    return response


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (an OpenAPI document) with the ``Problem`` schema among its components, and
    each 422 FastAPI declared by default (``HTTPValidationError``) declared as a problem."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            content = responses.get("422", {}).get("content", {})
            if "HTTPValidationError" in str(content.get("application/json", {})):
                responses["422"] = _problem_response(422)
    if "HTTPValidationError" not in str(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return document
