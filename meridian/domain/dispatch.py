"""The dispatch commands: what each step of the dispatch saga (``workflows/dispatch.yaml``) asks.

One frozen model per step; the step service validates a step's JSON body into its command at the
route, so a bad body is refused before any step runs, with every field's error named. Fields the
workflow may send and a step does not read are ignored, as they always were; ids are the strings
the saga made (a route's id is its window's plus ``-rNN``), so they are only required non-empty.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from meridian.domain.model import Identifier

Name = Annotated[str, Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0)]


class DispatchCommand(BaseModel):
    """Base of every step's command: immutable; unknown fields are ignored, not refused."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class ReserveWindow(DispatchCommand):
    """Plan the window's parcels into it and hold every available driver and vehicle for it."""

    window_id: Identifier


class OptimizeRoutes(DispatchCommand):
    window_id: Identifier
    time_limit_s: Seconds = 10.0


class AssignRoutes(DispatchCommand):
    window_id: Identifier


class OfferRoute(DispatchCommand):
    """Offer one route; ``offer_number`` 1 goes to the driver ``assign`` proposed."""

    window_id: Identifier
    route_id: Name
    offer_number: int = Field(ge=1)
    callback_url: Name
    timeout_s: Seconds = 900.0


class RouteOffer(DispatchCommand):
    """One route of ``OfferRoutes``, with the callback its driver's answer is sent to."""

    route_id: Name
    callback_url: Name


class OfferRoutes(DispatchCommand):
    """The first offer of every route at once."""

    window_id: Identifier
    offers: tuple[RouteOffer, ...]
    timeout_s: Seconds = 900.0


class ConfirmAssignment(DispatchCommand):
    assignment_id: Name


class DeclineAssignment(DispatchCommand):
    """The driver declined, or the offer expired (``expired``)."""

    assignment_id: Name
    expired: bool = False
    reason: str | None = None


class ReleaseRoutes(DispatchCommand):
    """Give back one route (``route_id``) or, without it, everything the window holds."""

    window_id: Identifier
    route_id: Name | None = None


class RequeueParcels(DispatchCommand):
    """Parcels of one route (``route_id``) or of the whole window back to CREATED."""

    window_id: Identifier
    route_id: Name | None = None
    reason: str | None = None


class CompleteDispatch(DispatchCommand):
    window_id: Identifier
    execution_id: Name


class FailDispatch(DispatchCommand):
    window_id: Identifier
    execution_id: Name
    reason: str | None = None
