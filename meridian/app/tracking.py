"""Customer tracking tokens: signed, scoped to one parcel, short-lived.

Issued when a parcel goes out for delivery and sent in the notification link; the live map's
tracking stream accepts a token only for its parcel. HS256 with a platform secret: in production
the secret comes from Secret Manager (``MERIDIAN_TRACKING_SECRET``), embedded it is generated once
in the data directory.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from meridian.domain.errors import PermissionDenied, Unauthenticated

ISSUER = "meridian-tracking"
DEFAULT_TTL_S = 12 * 3600


@dataclass(frozen=True)
class TrackingGrant:
    parcel_id: str
    expires_at: float


class TrackingTokens:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("the tracking secret must be at least 32 bytes")
        self._secret = secret
        self._clock = clock

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> TrackingTokens:
        path = Path(data_dir) / "tracking" / "secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{secrets.token_hex(4)}")
            tmp.write_bytes(secrets.token_bytes(32))
            tmp.chmod(0o600)
            try:
                path.hardlink_to(tmp)
            except FileExistsError:
                pass  # another process created it first; use theirs
            finally:
                tmp.unlink()
        return cls(path.read_bytes())

    def issue(self, parcel_id: str, ttl_s: float = DEFAULT_TTL_S) -> str:
        now = int(self._clock())
        claims = {
            "iss": ISSUER,
            "sub": parcel_id,
            "scope": "track",
            "iat": now,
            "exp": now + int(ttl_s),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str, parcel_id: str) -> TrackingGrant:
        """The grant if ``token`` is valid for ``parcel_id``: Unauthenticated for a forged or expired
        token, PermissionDenied for a valid token of another parcel."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("tracking link expired") from None
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"tracking token rejected: {e}") from None
        if claims.get("scope") != "track" or claims["sub"] != parcel_id:
            raise PermissionDenied("this tracking link is for another parcel")
        return TrackingGrant(parcel_id=parcel_id, expires_at=float(claims["exp"]))
