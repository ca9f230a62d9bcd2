"""HTTP plumbing every FastAPI service shares: RFC 9457 problem details for every error.

Domain errors map to status codes here, once; handlers never see HTTP. Bad input is always a 4xx
that lists every field error, never a 500.
"""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from meridian.domain.errors import (
    AlreadyExists,
    Conflict,
    DecodeError,
    IdempotencyMismatch,
    InvalidTransition,
    MeridianError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from meridian.observability import get_logger

PROBLEM_JSON = "application/problem+json"
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
    (Unavailable, 503, "unavailable"),
]


def problem(status: int, slug: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://meridian.dev/problems/{slug}",
        "title": slug.replace("-", " "),
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


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
            return problem(status, slug, str(error), **extra)
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
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        slug = "too-large" if error.status_code == 413 else "http-error"
        return problem(error.status_code, slug, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return problem(500, "internal", "unexpected error; it has been logged")
