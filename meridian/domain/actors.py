"""Who may act: an authenticated caller and its role (driver, dispatcher, client system, a
fleet gateway: a trusted telematics system that may report any vehicle's pings and send no
other command, the reads open to every non-client caller being open to it too; or an operator,
who runs the migration bridge's on-demand syncs).

Production verifies Identity Platform ID tokens and client API keys; embedded, a local issuer
signs tokens. Both produce an ``Actor``; handlers decide what that actor may do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meridian.domain.errors import PermissionDenied

Role = Literal["driver", "dispatcher", "client", "gateway", "operator"]
ROLES: tuple[Role, ...] = ("driver", "dispatcher", "client", "gateway", "operator")
# The roles a bearer token carries; client systems authenticate with API keys instead.
TOKEN_ROLES: tuple[Role, ...] = tuple(role for role in ROLES if role != "client")


@dataclass(frozen=True)
class Actor:
    """An authenticated caller: ``subject`` is the driver id, dispatcher id, client id, the
    gateway's name or the operator's id."""

    subject: str
    role: Role

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise PermissionDenied(
                f"{self.role} {self.subject} may not do this; it needs the role {' or '.join(roles)}"
            )
