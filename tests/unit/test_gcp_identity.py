"""The gcp identity verifier accepts an Identity Platform ID token only if it is signed by the
published keys, for this project (audience and issuer), from one of the platform's tenants, and
carrying a role a user may have (driver, dispatcher or gateway)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.gcp.identity import IdentityPlatformVerifier

PROJECT = "meridian-prod"
CERTS_URL = "https://keys.test/identity"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Response:
    status: int
    data: bytes
    headers: dict[str, str]


class PublishedKeys:
    """google-auth's transport, answering the certificates URL with ``KEY``'s JWK Set."""

    def __call__(self, url: str, method: str = "GET", **_: Any) -> Response:
        assert url == CERTS_URL
        jwk = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
        jwks = {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}
        return Response(200, json.dumps(jwks).encode(), {})


def token(key: Any = KEY, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": "drv-7",
        "role": "driver",
        "iat": now,
        "exp": now + 3600,
        "firebase": {"tenant": "drivers-x1y2", "sign_in_provider": "password"},
    }
    claims.update(changes)
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )


def verifier(
    tenants: tuple[str, ...] = ("drivers-x1y2", "customers-a9b8"),
) -> IdentityPlatformVerifier:
    return IdentityPlatformVerifier(PROJECT, CERTS_URL, tenants, request=PublishedKeys())


def test_a_token_of_a_platform_tenant_is_accepted() -> None:
    assert verifier().verify(token()) == Actor(subject="drv-7", role="driver")


@pytest.mark.parametrize("role", ["driver", "dispatcher", "gateway"])
def test_every_role_a_user_token_may_carry_is_accepted_as_the_embedded_verifier_does(
    role: str,
) -> None:
    # A fleet gateway's service user (role gateway) may report any vehicle's pings.
    assert verifier().verify(token(sub="gw-fleet", role=role)) == Actor("gw-fleet", role)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (token(key=OTHER_KEY), "token rejected"),
        (token(aud="another-project"), "token rejected"),
        (token(exp=int(time.time()) - 600, iat=int(time.time()) - 4000), "token rejected"),
        (token(iss="https://securetoken.google.com/another-project"), "token issued by"),
        (token(iss="https://accounts.google.com"), "token issued by"),
        (token(firebase={"tenant": "someone-elses"}), "tenant 'someone-elses' is not one"),
        (token(firebase={"sign_in_provider": "password"}), "belongs to no tenant"),
        (token(firebase=None), "belongs to no tenant"),
        (token(role="client"), "role 'client' is not one of driver, dispatcher, gateway"),
        (token(role=None), "role None is not one of driver, dispatcher, gateway"),
    ],
)
def test_a_token_failing_a_check_is_refused_naming_it(bad: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        verifier().verify(bad)


def test_without_tenants_only_users_of_no_tenant_sign_in() -> None:
    assert verifier(tenants=()).verify(token(firebase=None)).role == "driver"
    with pytest.raises(Unauthenticated, match="tenant 'drivers-x1y2' is not one"):
        verifier(tenants=()).verify(token())
