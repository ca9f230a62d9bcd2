"""A local OIDC-style token issuer for push delivery, and the verifier services use.

Pub/Sub signs each push with a Google-issued RS256 ID token (reference §3.4). Embedded, the
issuer's RSA key lives in the data directory (``oidc/issuer-key.pem``) and its public keys are
published as a JWKS document beside it (``oidc/jwks.json``); any process of the data directory
can verify a push with ``verify_push_token`` without talking to the platform process. The issuer
signs as whichever identity it is given: the platform gives it those of ``Settings``
(``push_identity``, ``eventarc_identity``, ``scheduler_identity``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from meridian.domain.errors import Unauthenticated
from meridian.ports import OidcTokenVerifier

ISSUER = "https://oidc.meridian.local"
TOKEN_LIFETIME_S = 3600
KEY_FILE = "issuer-key.pem"
JWKS_FILE = "jwks.json"


def _oidc_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "oidc"


class TokenIssuer:
    """Signs push tokens with the data directory's key, creating the key on first use."""

    def __init__(self, data_dir: Path | str, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._key = load_or_create_key(_oidc_dir(data_dir))
        self._kid = key_id(self._key.public_key())
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}

    def token(self, audience: str, email: str) -> str:
        """An ID token for ``audience`` (the push endpoint unless configured) as ``email``.

        Tokens are reused until ten minutes before they expire, as Pub/Sub reuses them; signing
        is the costly part of a push."""
        now = int(self._clock())
        cached = self._cache.get((audience, email))
        if cached and cached[0] - now > 600:
            return cached[1]
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "azp": email,
            "sub": email,
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_S,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})
        self._cache[(audience, email)] = (now + TOKEN_LIFETIME_S, token)
        return token


def load_jwks(data_dir: Path | str) -> dict[str, Any]:
    """The issuer's published public keys (creating the issuer if it never ran)."""
    path = _oidc_dir(data_dir) / JWKS_FILE
    if not path.exists():
        TokenIssuer(data_dir)
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


class PushTokenVerifier(OidcTokenVerifier):
    """Verifies push tokens against the published JWKS; what ``meridian.adapters`` gives a
    service's push authentication on the embedded runtime."""

    def __init__(self, jwks: dict[str, Any], issuer: str = ISSUER) -> None:
        self._issuer = issuer
        self._keys = {k["kid"]: RSAAlgorithm.from_jwk(json.dumps(k)) for k in jwks["keys"]}

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The token's claims; raises Unauthenticated unless signature, issuer, audience and
        expiry all check out and the email is verified."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid)
            if key is None:
                raise Unauthenticated(f"push token signed by unknown key {kid!r}")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,  # type: ignore[arg-type]  # an RSA public key, as from_jwk returns
                algorithms=["RS256"],
                audience=audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "aud", "iss", "email"]},
            )
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"push token rejected: {e}") from None
        if not claims.get("email_verified"):
            raise Unauthenticated("push token email is not verified")
        return claims


def verify_push_token(
    token: str, audience: str, data_dir: Path | str = ".meridian"
) -> dict[str, Any]:
    """Verify a push request's bearer token with the data directory's published keys."""
    return PushTokenVerifier(load_jwks(data_dir)).verify(token, audience)


def key_id(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def load_or_create_key(directory: Path) -> rsa.RSAPrivateKey:
    """The RSA signing key kept in ``directory`` (created on first use, race-free across
    processes), with its public half published beside it as ``jwks.json``."""
    key_path = directory / KEY_FILE
    if not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Write-then-link so two processes starting together agree on one key: the loser of
        # the link race simply loads the winner's.
        tmp = directory / f".{KEY_FILE}.{os.getpid()}"
        tmp.write_bytes(pem)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    jwks_path = directory / JWKS_FILE
    if not jwks_path.exists():
        jwk = json.loads(RSAAlgorithm.to_jwk(loaded.public_key()))
        jwk.update({"kid": key_id(loaded.public_key()), "alg": "RS256", "use": "sig"})
        tmp_jwks = directory / f".{JWKS_FILE}.{os.getpid()}"
        tmp_jwks.write_text(json.dumps({"keys": [jwk]}, indent=2))
        os.replace(tmp_jwks, jwks_path)
    return loaded
