"""On-demand syncs of the migration bridge (#21): an operator's request, validated, as the one
``SyncRequested`` event both ways of asking publish (``POST /v1/sync-requests`` on the command
service and ``meridian sync run``). From there the pipeline cannot tell it from a page of the
scheduled pull, except by its ``origin``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, Self, get_args

from pydantic import Field, model_validator

from meridian.domain.commands import Command
from meridian.domain.events import SyncOrigin, SyncRequested, derive_event_id
from meridian.domain.model import AwareDatetime, Identifier

SyncEntity = Literal["clients", "drivers", "vehicles", "shipments", "parcels"]
SYNC_ENTITIES: tuple[str, ...] = get_args(SyncEntity)
MAX_IDS = 1000  # one request's worth: a larger set is a --since, or the scheduled pull


class RequestSync(Command):
    """Bring ``entity``'s rows into Meridian now: exactly ``ids``, or every change of the
    monolith since ``since``, or (neither) every row."""

    entity: SyncEntity
    ids: tuple[Identifier, ...] = Field(default=(), max_length=MAX_IDS)
    since: AwareDatetime | None = Field(
        default=None, description="rows the monolith changed at or after this time"
    )

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        if self.ids and self.since is not None:
            raise ValueError("give ids or since, not both: ids names the rows, since a time")
        return self


def sync_requested(
    command: RequestSync, requester: str, now: datetime, request_id: str | None = None
) -> SyncRequested:
    """The event that asks for ``command``, by ``requester`` (the operator's subject)."""
    request_id = request_id or f"op-{uuid.uuid4().hex[:20]}"
    return SyncRequested(
        event_id=derive_event_id("SyncRequested", request_id),
        occurred_at=now,
        request_id=request_id,
        entity=command.entity,
        origin=SyncOrigin.ON_DEMAND,
        requester=requester,
        # (since, "") is before every id of that instant: the rows changed at ``since`` are in.
        after_updated_at=command.since,
        after_id="" if command.since is not None else None,
        ids=tuple(dict.fromkeys(command.ids)),
    )
