"""On-demand syncs of the migration bridge: an operator asks for rows of the legacy monolith to be
brought into Meridian now (``meridian.app.sync_requests``). The handler publishes the same
``SyncRequested`` the scheduled pull publishes per page, onto ``sync.requests``, and answers with
its request id, which the run's SyncStarted/SyncEnded/SyncError carry. A retried request publishes
another one: harmless, since applying is idempotent.
"""

from __future__ import annotations

from typing import Any

from meridian.app.sync_requests import RequestSync, sync_requested
from meridian.domain.actors import Actor
from services.command.handlers import Deps


def request_sync(command: RequestSync, actor: Actor, deps: Deps) -> dict[str, Any]:
    actor.require("operator")
    now = deps.clock()
    event = sync_requested(command, actor.subject, now)
    deps.publisher.publish(deps.codec.topic_of(event.event_type), [deps.codec.to_message(event)])
    return {
        "request_id": event.request_id,
        "entity": event.entity,
        "origin": event.origin.value,
        "ids": list(event.ids),
        "since": command.since.isoformat() if command.since else None,
        "accepted_at": now.isoformat(),
    }
