"""Identity Platform ID tokens (Firebase Auth) as the platform's driver, dispatcher and fleet
gateway identities.

A token is accepted only if it is signed by a key published at ``certs_url`` (Identity Platform's
own, ``Settings.identity_certs_url``), for this project (audience: the project id; issuer:
``https://securetoken.google.com/<project>``), and its user belongs to one of the tenants the
platform's users sign in to (``Settings.identity_tenants``, ``MERIDIAN_IDENTITY_TENANTS``, which
terraform/ sets to its drivers' and customers' tenants); with no tenants set, only users of no
tenant. The role is a custom claim (``role``) set on the user by the back office: any role of
``meridian.domain.actors.ROLES`` but ``client`` (client systems sign in with API keys), as the
embedded issuer's tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from google.auth.transport import requests as google_requests
from google.oauth2 import id_token

from meridian.config import IDENTITY_PLATFORM_CERTS_URL
from meridian.domain.actors import TOKEN_ROLES, Actor
from meridian.domain.errors import Unauthenticated
from meridian.ports import IdentityVerifier

ISSUER_PREFIX = "https://securetoken.google.com/"
# The roles a user token may carry: client systems sign in with API keys.


class IdentityPlatformVerifier(IdentityVerifier):
    """``request``: how Google's signing certificates are fetched (google-auth's transport)."""

    def __init__(
        self,
        project: str,
        certs_url: str = IDENTITY_PLATFORM_CERTS_URL,
        tenants: Iterable[str] = (),
        request: Any = None,
    ) -> None:
        self._project = project
        self._certs_url = certs_url
        self._issuer = ISSUER_PREFIX + project
        self._tenants = frozenset(tenants)
        self._request = request if request is not None else google_requests.Request()

    def verify(self, token: str) -> Actor:
        try:
            # Checks the signature, expiry and audience; not the issuer, checked below.
            claims: Mapping[str, Any] = id_token.verify_token(
                token, self._request, audience=self._project, certs_url=self._certs_url
            )
        # google-auth reports a failure as ValueError, or PyJWT's error with a JWK Set's keys
        except (ValueError, jwt.PyJWTError) as e:
            raise Unauthenticated(f"token rejected: {e}") from None
        if claims.get("iss") != self._issuer:
            raise Unauthenticated(f"token issued by {claims.get('iss')!r}, not {self._issuer!r}")
        firebase = claims.get("firebase")
        tenant = firebase.get("tenant") if isinstance(firebase, dict) else None
        if tenant is None and self._tenants:
            raise Unauthenticated("the token's user belongs to no tenant of the platform")
        if tenant is not None and tenant not in self._tenants:
            raise Unauthenticated(f"the token's tenant {tenant!r} is not one of the platform's")
        role = claims.get("role")
        if role not in TOKEN_ROLES:
            raise Unauthenticated(f"token role {role!r} is not one of {', '.join(TOKEN_ROLES)}")
        return Actor(subject=str(claims["sub"]), role=role)
