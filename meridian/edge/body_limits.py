"""How large a request body may be: a limit per route, enforced before the body is read.

Each service declares a table next to its routes: a default and the routes that need more (a
telemetry batch, a shipment, a POD photo, a push), each at its natural maximum, the largest valid
request of its kind. A body over its route's limit is answered 413 problem+json: at once when its
Content-Length says so, before a byte of it is read; else, for a chunked body, which has no length
to check up front, at the chunk that crosses the limit, and nothing more is read. Every service's
app applies its table to all of its routes, direct, plain and FastAPI's alike
(``meridian.edge.fast_routes.PlainRoutes``): one mechanism, in front of everything else.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import compile_path

KIB = 1024
MIB = 1024 * KIB
# Enough for any JSON command of a few fields (the longest parcel move is under 4 KiB).
DEFAULT_LIMIT = 64 * KIB

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyTooLarge(HTTPException):
    """The body is larger than its route accepts (413, answered by the app's problem handlers)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body of this request may be at most {limit} bytes")


class MalformedLength(HTTPException):
    def __init__(self) -> None:
        super().__init__(400, "Content-Length is not a number of bytes")


@dataclass(frozen=True)
class BodyLimits:
    """A service's table: ``routes`` maps (method, path template as its route declares it) to the
    most bytes its body may have; every other route gets ``default``."""

    default: int = DEFAULT_LIMIT
    routes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    _patterns: tuple[tuple[str, re.Pattern[str], int], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        patterns = tuple(
            (method.upper(), compile_path(path)[0], limit)
            for (method, path), limit in self.routes.items()
        )
        object.__setattr__(self, "_patterns", patterns)  # frozen: set once, while being built

    def of_route(self, method: str, template: str) -> int:
        """The limit of a route known by its template (fixed when the route is registered)."""
        return self.routes.get((method, template), self.default)

    def limit_of(self, method: str, path: str) -> int:
        """The limit of a request's path (for the routes FastAPI's routing will find)."""
        for route_method, pattern, limit in self._patterns:
            if route_method == method and pattern.match(path):
                return limit
        return self.default


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, None if it sent none (MalformedLength if not a number)."""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                raise MalformedLength()
            return int(value)
    return None


def limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises BodyTooLarge at the chunk that takes the body past ``limit``."""
    size = 0

    async def receive_within_limit() -> dict[str, Any]:
        nonlocal size
        message = await receive()
        body = message.get("body")
        if body:
            size += len(body)
            if size > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit
