"""Identity Platform ID tokens (Firebase Auth) as the platform's driver and dispatcher identities.

The role is a custom claim (``role``) set on the user by the back office.
"""

from __future__ import annotations

from typing import Any

from google.auth.transport import requests as google_requests
from google.oauth2 import id_token

from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.ports import IdentityVerifier


class IdentityPlatformVerifier(IdentityVerifier):
    def __init__(self, project: str) -> None:
        self._project = project
        self._request = google_requests.Request()

    def verify(self, token: str) -> Actor:
        try:
            claims: dict[str, Any] = id_token.verify_firebase_token(
                token, self._request, audience=self._project
            )
        except ValueError as e:  # google-auth reports every verification failure as ValueError
            raise Unauthenticated(f"token rejected: {e}") from None
        role = claims.get("role")
        if role not in ("driver", "dispatcher"):
            raise Unauthenticated("the token carries no driver or dispatcher role claim")
        return Actor(subject=str(claims["sub"]), role=role)
