"""Push-request authentication, embedded and on Cloud Run.

Embedded, the platform signs each push with its local issuer and services verify the signature
against the published keys. On Cloud Run, IAM (``roles/run.invoker`` for the push identity only)
has verified the token before the request arrives and strips its signature (reference §3.5), so
the service reads the claims and checks the caller's identity without re-verifying.
"""

from __future__ import annotations

import jwt

from meridian.domain.errors import PermissionDenied, Unauthenticated
from meridian.embedded.oidc import PushTokenVerifier
from meridian.ports import PushAuthenticator


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("push requests carry 'Authorization: Bearer <OIDC token>'")
    return token


class VerifiedPush(PushAuthenticator):
    def __init__(self, verifier: PushTokenVerifier, allowed_emails: frozenset[str]) -> None:
        self._verifier = verifier
        self._allowed = allowed_emails

    def check(self, authorization: str | None, audience: str) -> None:
        claims = self._verifier.verify(_bearer(authorization), audience)
        if claims.get("email") not in self._allowed:
            raise PermissionDenied(f"{claims.get('email')} may not call this endpoint")


class CloudRunIamPush(PushAuthenticator):
    def __init__(self, allowed_emails: frozenset[str]) -> None:
        self._allowed = allowed_emails

    def check(self, authorization: str | None, audience: str) -> None:
        try:
            claims = jwt.decode(_bearer(authorization), options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"push token unreadable: {e}") from None
        if claims.get("email") not in self._allowed:
            raise PermissionDenied(f"{claims.get('email')} may not call this endpoint")
