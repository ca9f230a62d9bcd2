"""The embedded stand-in for Identity Platform: a local issuer of driver, dispatcher and fleet
gateway tokens (any role of ``meridian.domain.actors.ROLES`` but ``client``: client systems use
API keys).

Its key lives in ``<data dir>/identity/`` (separate from the push issuer: a user token must never
pass as a push token, nor the reverse). ``meridian token --role driver --sub drv-7`` prints one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from meridian.domain.actors import TOKEN_ROLES, Actor
from meridian.domain.errors import Unauthenticated, ValidationError
from meridian.embedded.oidc import JWKS_FILE, key_id, load_or_create_key
from meridian.ports import IdentityVerifier

ISSUER = "https://identity.meridian.local"
AUDIENCE = "meridian"
# The roles a user token may carry: client systems sign in with API keys.


def _directory(data_dir: Path | str) -> Path:
    return Path(data_dir) / "identity"


class LocalIdentityIssuer:
    def __init__(self, data_dir: Path | str, clock: Callable[[], float] = time.time) -> None:
        self._key = load_or_create_key(_directory(data_dir))
        self._kid = key_id(self._key.public_key())
        self._clock = clock

    def token(self, subject: str, role: str, ttl_s: float = 12 * 3600) -> str:
        if role not in TOKEN_ROLES:
            raise ValidationError(f"role must be one of {', '.join(TOKEN_ROLES)}, not {role!r}")
        now = int(self._clock())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "role": role,
            "iat": now,
            "exp": now + int(ttl_s),
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})


class LocalIdentityVerifier(IdentityVerifier):
    """Verifies tokens against the issuer's published keys (read once, at bootstrap)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = {k["kid"]: RSAAlgorithm.from_jwk(json.dumps(k)) for k in jwks["keys"]}

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> LocalIdentityVerifier:
        directory = _directory(data_dir)
        load_or_create_key(directory)  # a fresh data dir has no issuer yet
        jwks: dict[str, Any] = json.loads((directory / JWKS_FILE).read_text())
        return cls(jwks)

    def verify(self, token: str) -> Actor:
        try:
            key = self._keys.get(jwt.get_unverified_header(token).get("kid"))
            if key is None:
                raise Unauthenticated("token signed by an unknown key")
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]  # an RSA public key, as from_jwk returns
                algorithms=["RS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"token rejected: {e}") from None
        role = claims.get("role")
        if role not in TOKEN_ROLES:
            raise Unauthenticated(f"token role {role!r} is not one of {', '.join(TOKEN_ROLES)}")
        return Actor(subject=str(claims["sub"]), role=role)
