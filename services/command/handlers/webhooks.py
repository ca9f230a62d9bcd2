"""A client system's webhook endpoints: register (the answer carries the ``whsec_`` secret, shown
once), list, read, delete, read the delivery log, replay failed deliveries. A client manages only
its own endpoints; the rules of an endpoint and of its deliveries are ``meridian/app/webhooks.py``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from meridian.app import webhooks
from meridian.domain.actors import Actor
from meridian.domain.errors import PermissionDenied
from services.command.handlers import Deps


def _own(caller: Actor, client_id: str) -> None:
    caller.require("client")
    if caller.subject != client_id:
        raise PermissionDenied(f"client {caller.subject} cannot manage the webhooks of {client_id}")


def register_endpoint(
    caller: Actor,
    client_id: str,
    url: str,
    event_types: list[str],
    deps: Deps,
) -> dict[str, Any]:
    _own(caller, client_id)
    return webhooks.register_endpoint(
        deps.store, client_id, url, event_types, deps.webhook_policy, deps.clock()
    )


def list_endpoints(caller: Actor, client_id: str, deps: Deps) -> list[dict[str, Any]]:
    _own(caller, client_id)
    return webhooks.list_endpoints(deps.store, client_id)


def get_endpoint(caller: Actor, client_id: str, webhook_id: str, deps: Deps) -> dict[str, Any]:
    _own(caller, client_id)
    return webhooks.get_endpoint(deps.store, client_id, webhook_id)


def delete_endpoint(caller: Actor, client_id: str, webhook_id: str, deps: Deps) -> None:
    _own(caller, client_id)
    webhooks.delete_endpoint(deps.store, client_id, webhook_id)


def delivery_log(
    caller: Actor, client_id: str, webhook_id: str, deps: Deps
) -> list[dict[str, Any]]:
    _own(caller, client_id)
    return webhooks.delivery_log(deps.store, client_id, webhook_id)


def replay(
    caller: Actor, client_id: str, webhook_id: str, since: datetime | None, deps: Deps
) -> int:
    """Send the endpoint's failed deliveries (since ``since``) again; how many were queued."""
    _own(caller, client_id)
    return webhooks.replay(deps.store, client_id, webhook_id, since, deps.clock())
