"""Who is calling: the bearer token of an ``Authorization`` header, bearer tokens remembered once
verified, API keys stored as digests.

The identity verifiers themselves are adapters of ``ports.IdentityVerifier`` (Identity Platform
on GCP; embedded, a local issuer: ``meridian token --role driver --sub drv-7``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import jwt

from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.ports import IdentityVerifier

BEARER_REQUIRED = "Authorization must be 'Bearer <token>'"


def bearer_token(authorization: str | None, refusal: str = BEARER_REQUIRED) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, RFC 9110
    §11.1); Unauthenticated with ``refusal`` for a missing header, another scheme or no token."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(refusal)
    return token


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
