"""Push-request authentication, embedded and on Cloud Run, and the cache of accepted push tokens.

Embedded, the platform signs each push with its local issuer and services verify the signature
against the published keys (``VerifiedPush`` over a ``ports.OidcTokenVerifier``, which
``meridian.adapters`` wires). On Cloud Run, IAM (``roles/run.invoker`` for the push identity only)
has verified the token before the request arrives and strips its signature (reference §3.5), so
the service reads the claims and checks the caller's identity without re-verifying
(``CloudRunIamPush``); with ``Settings.push_certs_url`` set, a gcp service verifies Google's tokens
itself against the keys published there (``PublishedKeys``: a service no IAM check fronts, and
the gcp tier on Google's emulators, whose harness signs with a local key). Which identity may call
comes from ``Settings`` (``push_identity``, ``eventarc_identity``, ``scheduler_identity``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt

from meridian.app.auth import bearer_token
from meridian.domain.errors import PermissionDenied, Unauthenticated, Unavailable
from meridian.ports import OidcTokenVerifier, PushAuthenticator

PUSH_BEARER_REQUIRED = "push requests carry 'Authorization: Bearer <OIDC token>'"
# The issuers of Google-signed ID tokens (Pub/Sub push, Eventarc, Cloud Scheduler; reference §3.4).
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


class VerifiedPush(PushAuthenticator):
    def __init__(self, verifier: OidcTokenVerifier, allowed_emails: frozenset[str]) -> None:
        self._verifier = verifier
        self._allowed = allowed_emails

    def check(self, authorization: str | None, audience: str) -> None:
        token = bearer_token(authorization, PUSH_BEARER_REQUIRED)
        claims = self._verifier.verify(token, audience)
        if claims.get("email") not in self._allowed:
            raise PermissionDenied(f"{claims.get('email')} may not call this endpoint")


class PublishedKeys(OidcTokenVerifier):
    """Verifies Google-signed ID tokens against the keys published at ``certs_url`` (a JWKS, as
    Google's ``https://www.googleapis.com/oauth2/v3/certs``): RS256 signature, audience, issuer
    (one of ``issuers``), expiry, and a verified email, as ``verify_oauth2_token`` does.

    The keys are fetched on the first token and kept; a token naming a key not seen yet fetches
    them again (Google rotates its keys). The fetch blocks, which is once per process and key:
    ``RememberedTokens`` spares accepted tokens every check after their first."""

    def __init__(self, certs_url: str, issuers: Sequence[str] = GOOGLE_ISSUERS) -> None:
        self._keys = jwt.PyJWKClient(certs_url, cache_keys=True)
        self._issuers = list(issuers)

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=audience,
                issuer=self._issuers,
                options={"require": ["exp", "iat", "aud", "iss", "email"]},
            )
        except jwt.PyJWKClientConnectionError as e:
            raise Unavailable(f"the push token's keys could not be fetched: {e}") from None
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"push token rejected: {e}") from None
        if claims.get("email_verified") is not True:
            raise Unauthenticated("push token email is not verified")
        return claims


class CloudRunIamPush(PushAuthenticator):
    def __init__(self, allowed_emails: frozenset[str]) -> None:
        self._allowed = allowed_emails

    def check(self, authorization: str | None, audience: str) -> None:
        token = bearer_token(authorization, PUSH_BEARER_REQUIRED)
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"push token unreadable: {e}") from None
        if claims.get("email") not in self._allowed:
            raise PermissionDenied(f"{claims.get('email')} may not call this endpoint")


class RememberedTokens(PushAuthenticator):
    """Accepts again, until it expires, a push token ``auth`` has accepted for an audience.

    Pub/Sub and Eventarc sign one token per audience and reuse it for up to an hour, so every
    push after the first carries a token already verified; verifying it again (PyJWT's parse and
    an RS256 signature check) was about a quarter of a millisecond of every push. Only the exact
    token string is remembered, with the expiry it carries, so nothing is accepted that ``auth``
    would refuse, except a token whose signing key is withdrawn before it expires.
    """

    def __init__(
        self, auth: PushAuthenticator, clock: Callable[[], float] = time.time, size: int = 256
    ) -> None:
        self._auth = auth
        self._clock = clock
        self._size = size
        self._accepted: dict[tuple[str, str], float] = {}

    def check(self, authorization: str | None, audience: str) -> None:
        key = (authorization or "", audience)
        expiry = self._accepted.get(key)
        if expiry is not None and self._clock() < expiry:
            return
        self._auth.check(authorization, audience)
        expiry = _expiry(authorization or "")
        if expiry is not None:
            if len(self._accepted) >= self._size:
                self._accepted.clear()  # old tokens of audiences that no longer call
            self._accepted[key] = expiry


def _expiry(authorization: str) -> float | None:
    """The ``exp`` claim of a bearer JWT (already verified), None if it has none."""
    try:
        payload = authorization.partition(" ")[2].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None
