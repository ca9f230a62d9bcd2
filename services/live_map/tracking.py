"""Customer tracking and the dispatchers' fleet view, as streams of map updates built on document
listeners (Firestore listeners in production): nothing here polls.

A customer's stream follows three documents: ``parcels/{id}`` (the write model: status and the
assigned vehicle, which decide the scope), ``parcel_status/{id}`` (the ETA reactor's projection:
ETA and route, when it exists) and ``live_map/{vehicle}`` of whichever vehicle the parcel is on.
It shows only that vehicle, only while the parcel is OUT_FOR_DELIVERY, and ends with the final
status, or when the token expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from meridian.app.tracking import TrackingGrant, TrackingTokens
from meridian.domain.errors import Conflict, MeridianError, NotFound, Unauthenticated
from meridian.domain.states import ParcelStatus
from meridian.ports import Document, DocumentStore, Query, Snapshot
from services.live_map.writer import COLLECTION

KEEPALIVE_S = 15.0
ENDED_STATUSES = frozenset(
    {ParcelStatus.DELIVERED, ParcelStatus.DELIVERY_FAILED, ParcelStatus.RETURNED}
)
# What the projection may add to a customer's status; nothing else of it is shown.
PROJECTED_FIELDS = ("status", "eta", "route_id", "sla")


class TrackingEnded(MeridianError):
    """The parcel is no longer out for delivery: its tracking link is spent (HTTP 410)."""

    def __init__(self, parcel_id: str, status: str) -> None:
        self.status = status
        super().__init__(f"tracking of parcel {parcel_id} has ended: it is {status}")


@dataclass(frozen=True)
class MapEvent:
    """One Server-Sent Event: ``kind`` is its event name, ``data`` its JSON body."""

    kind: Literal["vehicle", "status", "end", "keepalive", "geofence", "route"]
    data: Mapping[str, Any]


@dataclass(frozen=True)
class TrackingDeps:
    store: DocumentStore
    tokens: TrackingTokens
    clock: Callable[[], float]  # epoch seconds, compared with the token's expiry


def open_tracking(parcel_id: str, token: str | None, deps: TrackingDeps) -> TrackingGrant:
    """Check a customer's token and the parcel's state before a stream opens: 401 (no, forged
    or expired token), 403 (another parcel's token), 404, 409 (not out yet), 410 (ended)."""
    if not token:
        raise Unauthenticated("a tracking token is required (the link in your notification)")
    grant = deps.tokens.verify(token, parcel_id)
    parcel = deps.store.get(f"parcels/{parcel_id}")
    if parcel is None:
        raise NotFound(f"no parcel {parcel_id}")
    status = parcel.data["status"]
    if status in ENDED_STATUSES:
        raise TrackingEnded(parcel_id, status)
    if status != ParcelStatus.OUT_FOR_DELIVERY:
        raise Conflict(
            f"parcel {parcel_id} is {status}; tracking starts when it is out for delivery"
        )
    return grant


def vehicle_view(document: Document) -> dict[str, Any]:
    data = document.data
    return {
        "vehicle_id": data["vehicle_id"],
        "lat": data["lat"],
        "lng": data["lng"],
        "heading_deg": data.get("heading_deg"),
        "speed_mps": data.get("speed_mps"),
        "recorded_at": _iso(data["recorded_at"]),
        "written_at": _iso(data.get("written_at")),
    }


def status_view(parcel_id: str, parcel: Document, projection: Document | None) -> dict[str, Any]:
    stop = parcel.data["stop"]
    view: dict[str, Any] = {
        "parcel_id": parcel_id,
        "status": parcel.data["status"],
        "vehicle_id": parcel.data.get("vehicle_id"),
        "stop": {"lat": stop["location"]["lat"], "lng": stop["location"]["lng"]},
        "window_end": _iso(stop["window"]["end"]),
        "eta": None,
    }
    if projection is not None:
        for name in PROJECTED_FIELDS:
            if name in projection.data and name != "status":
                view[name] = _iso(projection.data[name])
    return view


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


class _Listeners:
    """Pumps several listeners into one queue, so one loop can react to whichever fires."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Snapshot]] = asyncio.Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def follow(self, name: str, listener: AsyncIterator[Snapshot]) -> None:
        self.stop(name)

        async def pump() -> None:
            async for snapshot in listener:
                await self.queue.put((name, snapshot))

        self._tasks[name] = asyncio.create_task(pump(), name=f"listener:{name}")

    def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def next(self, timeout_s: float) -> tuple[str, Snapshot] | None:
        for task in self._tasks.values():
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # a listener died: end the stream
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.queue.get(), timeout_s)
        return None


async def track_parcel(
    parcel_id: str, grant: TrackingGrant, deps: TrackingDeps
) -> AsyncIterator[MapEvent]:
    """The customer's stream: status first, then vehicle positions and status changes as they
    are written, until the parcel leaves OUT_FOR_DELIVERY (a final ``end`` event) or the token
    expires."""
    listeners = _Listeners()
    listeners.follow("parcel", deps.store.watch_document(f"parcels/{parcel_id}"))
    listeners.follow("projection", deps.store.watch_document(f"parcel_status/{parcel_id}"))
    parcel: Document | None = None
    projection: Document | None = None
    vehicle_id: str | None = None
    shown_at: datetime | None = None  # event time of the position last sent
    try:
        while True:
            remaining = grant.expires_at - deps.clock()
            if remaining <= 0:
                yield MapEvent("end", {"parcel_id": parcel_id, "reason": "link expired"})
                return
            fired = await listeners.next(min(KEEPALIVE_S, remaining))
            if fired is None:
                yield MapEvent("keepalive", {})
                continue
            name, snapshot = fired
            document = snapshot.documents[0] if snapshot.documents else None
            if name == "vehicle":
                if document is None:
                    continue
                recorded = document.data["recorded_at"]
                # Writes are guarded already; this also holds across a listener resync.
                if shown_at is None or recorded > shown_at:
                    shown_at = recorded
                    yield MapEvent("vehicle", vehicle_view(document))
                continue
            if name == "parcel":
                if document is None:
                    yield MapEvent("end", {"parcel_id": parcel_id, "status": "UNKNOWN"})
                    return
                parcel = document
            else:
                projection = document
            if parcel is None:
                continue  # the projection can fire first; the parcel's snapshot follows
            status = parcel.data["status"]
            view = status_view(parcel_id, parcel, projection)
            yield MapEvent("status", view)
            if status != ParcelStatus.OUT_FOR_DELIVERY:
                yield MapEvent("end", view)
                return
            if parcel.data.get("vehicle_id") != vehicle_id:
                vehicle_id = parcel.data.get("vehicle_id")
                shown_at = None
                listeners.stop("vehicle")
                if vehicle_id:
                    listeners.follow(
                        "vehicle", deps.store.watch_document(f"{COLLECTION}/{vehicle_id}")
                    )
    finally:
        await listeners.close()


FENCES = "geofences"  # written by dispatchers; read by the geofence pipeline
BOARDS = "route_board"  # the ETA reactor's projection of each route


def fence_view(document: Document) -> dict[str, Any]:
    """A geofence as the map draws it: GeoJSON geometry (a Point with ``radius_m`` is a circle).

    The collection stores the geometry as a JSON string (Firestore has no nested arrays)."""
    data = document.data
    geometry = data.get("geometry")
    if isinstance(geometry, str):
        try:
            geometry = json.loads(geometry)
        except ValueError:
            geometry = None  # the pipeline reports bad fences; the map just leaves them out
    return {
        "fence_id": document.id,
        "name": data.get("name", document.id),
        "geometry": geometry if isinstance(geometry, dict) else None,
        "radius_m": data.get("radius_m"),
    }


def route_view(document: Document) -> dict[str, Any]:
    """A route board as the map draws it: the stops in planned order with status and ETA, and
    the vehicle's last position the ETA reactor used. Recipients are not included."""
    data = document.data
    stops = sorted(
        (s for s in data.get("stops", {}).values() if "lat" in s and "lng" in s),
        key=lambda s: s.get("sequence", 0),
    )
    return {
        "route_id": document.id,
        "vehicle_id": data.get("vehicle_id"),
        "position": data.get("position"),
        "stops": [
            {
                "parcel_id": s.get("parcel_id"),
                "lat": s["lat"],
                "lng": s["lng"],
                "status": s.get("status"),
                "eta": _iso(s.get("eta")),
            }
            for s in stops
        ],
    }


def _removed(kind: Literal["vehicle", "geofence", "route"], change_path: str) -> MapEvent:
    key = {"vehicle": "vehicle_id", "geofence": "fence_id", "route": "route_id"}[kind]
    return MapEvent(kind, {key: change_path.rsplit("/", 1)[-1], "removed": True})


async def track_fleet(store: DocumentStore) -> AsyncIterator[MapEvent]:
    """The dispatchers' stream: every vehicle's position, geofence and route board, then each
    one again as it is written (or ``removed``)."""
    views: dict[str, tuple[Literal["vehicle", "geofence", "route"], Any]] = {
        COLLECTION: ("vehicle", vehicle_view),
        FENCES: ("geofence", fence_view),
        BOARDS: ("route", route_view),
    }
    listeners = _Listeners()
    for collection in views:
        listeners.follow(collection, store.watch_query(Query(collection)))
    try:
        while True:
            fired = await listeners.next(KEEPALIVE_S)
            if fired is None:
                yield MapEvent("keepalive", {})
                continue
            kind, view = views[fired[0]]
            for change in fired[1].changes:
                if change.kind == "removed" or change.document is None:
                    yield _removed(kind, change.path)
                else:
                    yield MapEvent(kind, view(change.document))
    finally:
        await listeners.close()
