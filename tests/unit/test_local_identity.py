"""The embedded identity issuer and verifier (Identity Platform's stand-in) and `meridian token`:
the roles a user token may carry are those of ``meridian.domain.actors.ROLES`` but ``client``."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated, ValidationError
from meridian.embedded.identity import (
    AUDIENCE,
    ISSUER,
    LocalIdentityIssuer,
    LocalIdentityVerifier,
)
from meridian.embedded.oidc import key_id, load_or_create_key
from meridian.runtime.cli import app


@pytest.mark.parametrize("role", ["driver", "dispatcher", "gateway"])
def test_a_user_token_of_each_role_is_issued_and_verified(tmp_path: Path, role: str) -> None:
    token = LocalIdentityIssuer(tmp_path).token("someone", role)
    actor = LocalIdentityVerifier.for_data_dir(tmp_path).verify(token)
    assert actor == Actor("someone", role)  # type: ignore[arg-type]


def test_a_token_of_another_role_is_refused_naming_the_roles(tmp_path: Path) -> None:
    LocalIdentityIssuer(tmp_path)  # the issuer's key
    key = load_or_create_key(tmp_path / "identity")
    verifier = LocalIdentityVerifier.for_data_dir(tmp_path)
    kid = key_id(key.public_key())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "c-1", "iat": 0, "exp": 2**40}
    for role in ("client", "admin"):
        forged = jwt.encode({**claims, "role": role}, key, "RS256", headers={"kid": kid})
        with pytest.raises(Unauthenticated) as refused:
            verifier.verify(forged)
        assert str(refused.value) == (
            f"token role {role!r} is not one of driver, dispatcher, gateway, operator"
        )
    with pytest.raises(ValidationError, match="one of driver, dispatcher, gateway, operator"):
        LocalIdentityIssuer(tmp_path).token("c-1", "client")


def test_meridian_token_prints_a_gateway_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["token", "--role", "gateway", "--sub", "gw-fleet", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert LocalIdentityVerifier.for_data_dir(tmp_path).verify(token) == Actor(
        "gw-fleet", "gateway"
    )
    refused = CliRunner().invoke(
        app, ["token", "--role", "client", "--sub", "c-1", "--data-dir", str(tmp_path)]
    )
    assert refused.exit_code == 2
    assert "one of driver, dispatcher, gateway" in refused.output
