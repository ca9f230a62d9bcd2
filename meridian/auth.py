"""Who is calling: drivers and dispatchers with bearer tokens, client systems with API keys.

Production verifies Identity Platform ID tokens; embedded, a local issuer signs tokens
(``meridian token --role driver --sub drv-7``). Both produce an ``Actor``; handlers decide what
that actor may do.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jwt

from meridian.domain.errors import PermissionDenied

Role = Literal["driver", "dispatcher", "client"]
ROLES: tuple[Role, ...] = ("driver", "dispatcher", "client")


@dataclass(frozen=True)
class Actor:
    """An authenticated caller: ``subject`` is the driver id, dispatcher id or client id."""

    subject: str
    role: Role

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise PermissionDenied(
                f"{self.role} {self.subject} may not do this; it needs the role {' or '.join(roles)}"
            )


class IdentityVerifier(abc.ABC):
    """Turns a bearer token into an Actor; raises Unauthenticated for a bad or expired token."""

    @abc.abstractmethod
    def verify(self, token: str) -> Actor: ...


class CachingVerifier(IdentityVerifier):
    """Remembers tokens already verified until they expire: an RS256 signature check costs more
    than the rest of a "mark delivered" request, and a driver app sends the same token all shift."""

    def __init__(
        self,
        inner: IdentityVerifier,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.time,
    ):
        self._inner = inner
        self._max = max_entries
        self._clock = clock
        self._known: dict[str, tuple[Actor, float]] = {}

    def verify(self, token: str) -> Actor:
        known = self._known.get(token)
        if known is not None and known[1] > self._clock():
            return known[0]
        actor = self._inner.verify(token)
        if len(self._known) >= self._max:
            self._known.clear()  # crude but bounded; verification simply happens again
        self._known[token] = (actor, self._expiry(token))
        return actor

    def _expiry(self, token: str) -> float:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})  # verified just above
            return float(claims.get("exp", 0))
        except jwt.PyJWTError:
            return 0.0


def api_key_digest(api_key: str) -> str:
    """API keys are stored only as this digest (``api_keys/{digest}`` → client id)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class PushAuthenticator(abc.ABC):
    """Checks the OIDC token on a push request (Pub/Sub push, Eventarc) against the identity that
    may call this endpoint; raises Unauthenticated or PermissionDenied."""

    @abc.abstractmethod
    def check(self, authorization: str | None, audience: str) -> None: ...
