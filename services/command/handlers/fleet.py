"""The dispatch desk's fleet: register, read, list, change and remove drivers, vehicles and
geofences. Dispatchers only.

They are the very documents the rest of the platform reads: drivers and vehicles are those the
dispatch saga reserves (``meridian/app/dispatch_records.py``'s collections, the shapes
``services/dispatch/handlers/planning.py`` reads, ``window_id`` and ``route_id`` written by the
saga), and a geofence is the document ``pipelines/geofence/fences.py`` loads (``geometry`` a
GeoJSON string, ``margin_m``, ``active``, ``active_from``), so the geofence job picks a change up
at its next refresh, as it does today.

A driver or vehicle a window holds (``window_id`` set) belongs to the saga until it gives it
back: the desk may rename it, but not take it off duty or remove it (409). A geofence's polygon is
checked here, once, with every problem named (``check_fence_geometry``): the job would skip a
broken fence in silence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from meridian.app import dispatch_records as rec
from meridian.app.idempotency import RequestKey, record_response, replayed_response
from meridian.domain.actors import Actor
from meridian.domain.errors import AlreadyExists, Conflict, FieldError, NotFound, ValidationError
from meridian.domain.model import DriverStatus, VehicleStatus
from meridian.ports import Query, Transaction
from services.command.handlers import Deps

# pipelines/geofence/fences.py's COLLECTION (the job's package is not in the service image).
GEOFENCES = "geofences"

# A fence is a yard, a zone, at most a city: beyond these it is a mistake (a lat/lng swap, a
# world-sized ring), and every ping is tested against every fence it may contain.
MAX_FENCE_VERTICES = 2_000
MAX_FENCE_AREA_KM2 = 5_000.0
METRES_PER_DEGREE = 111_320.0  # as pipelines/geofence/fences.py measures margins

MAX_PAGE = 500


@dataclass(frozen=True)
class Kind:
    """One kind of fleet record: its collection, the field naming it, the statuses the desk may
    set (the others are the saga's) and the optional fields a change may clear (null)."""

    name: str
    collection: str
    id_field: str
    desk_statuses: frozenset[str]
    clearable: frozenset[str] = frozenset()


DRIVER = Kind(
    "driver",
    rec.DRIVERS,
    "driver_id",
    frozenset({DriverStatus.AVAILABLE.value, DriverStatus.OFF_DUTY.value}),
)
VEHICLE = Kind(
    "vehicle",
    rec.VEHICLES,
    "vehicle_id",
    frozenset({VehicleStatus.AVAILABLE.value, VehicleStatus.OUT_OF_SERVICE.value}),
    clearable=frozenset({"shift"}),
)
# The job reads a fence without active_from as in effect for every ping.
GEOFENCE = Kind("geofence", GEOFENCES, "fence_id", frozenset(), frozenset({"active_from"}))


def _path(kind: Kind, item_id: str) -> str:
    return f"{kind.collection}/{item_id}"


def view(kind: Kind, item_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the API answers it: timestamps as RFC 3339, a fence's geometry as GeoJSON."""
    return _presented(kind, _stored_view(kind, item_id, data))


def _stored_view(kind: Kind, item_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The answer as the idempotency ledger keeps it: a fence's geometry still a string, since
    a document cannot hold GeoJSON's nested arrays."""
    out: dict[str, Any] = {kind.id_field: item_id}
    for key, value in data.items():
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _presented(kind: Kind, answer: dict[str, Any]) -> dict[str, Any]:
    if kind is GEOFENCE and isinstance(answer.get("geometry"), str):
        return {**answer, "geometry": json.loads(answer["geometry"])}
    return answer


def register(
    kind: Kind,
    item_id: str,
    fields: Mapping[str, Any],
    actor: Actor,
    deps: Deps,
    request: RequestKey | None,
) -> dict[str, Any]:
    """Create the record ``item_id`` (AlreadyExists if there is one); a retried request with the
    same Idempotency-Key gets the first answer."""
    actor.require("dispatcher")
    document = _document(kind, fields)
    if kind.desk_statuses:
        document.setdefault("status", "AVAILABLE")  # in the pool of the next window
    now = deps.clock()
    path = _path(kind, item_id)

    def work(tx: Transaction) -> dict[str, Any]:
        if (replay := replayed_response(tx, request)) is not None:
            return replay
        if tx.get(path) is not None:
            raise AlreadyExists(f"{kind.name} {item_id} already exists")
        data = {kind.id_field: item_id, **document, "created_at": now, "updated_at": now}
        tx.create(path, data)
        response = _stored_view(kind, item_id, data)
        record_response(tx, request, response, now)
        return response

    return _presented(kind, deps.store.run_transaction(work))


def read(kind: Kind, item_id: str, actor: Actor, deps: Deps) -> dict[str, Any]:
    actor.require("dispatcher")
    found = deps.store.get(_path(kind, item_id))
    if found is None:
        raise NotFound(f"no {kind.name} {item_id}")
    return view(kind, item_id, found.data)


def page(
    kind: Kind, after: str | None, limit: int, actor: Actor, deps: Deps
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` records in id order after ``after``, and the id to continue after (None
    on the last page). One page read at a time, never the whole collection."""
    actor.require("dispatcher")
    query = Query(kind.collection).order_by(kind.id_field).limit(min(limit, MAX_PAGE) + 1)
    if after is not None:
        query = query.where(kind.id_field, ">", after)
    found = deps.store.query(query)
    items = [view(kind, d.id, d.data) for d in found[: min(limit, MAX_PAGE)]]
    more = len(found) > len(items)
    return items, (items[-1][kind.id_field] if more and items else None)


def change(
    kind: Kind,
    item_id: str,
    fields: Mapping[str, Any],
    actor: Actor,
    deps: Deps,
    request: RequestKey | None,
) -> dict[str, Any]:
    """Set the given fields of the record (a JSON merge: fields not sent are kept)."""
    actor.require("dispatcher")
    update = _document(kind, fields)
    now = deps.clock()
    path = _path(kind, item_id)

    def work(tx: Transaction) -> dict[str, Any]:
        if (replay := replayed_response(tx, request)) is not None:
            return replay
        found = tx.get(path)
        if found is None:
            raise NotFound(f"no {kind.name} {item_id}")
        current = dict(found.data)
        if "status" in update and update["status"] != current.get("status"):
            _check_free(kind, item_id, current, "change the status of")
            if current.get("status") not in kind.desk_statuses:
                raise Conflict(
                    f"{kind.name} {item_id} is {current.get('status')}: the dispatch saga "
                    "gives it back before the desk may change its status"
                )
        changes = {**update, "updated_at": now}
        tx.update(path, changes)
        response = _stored_view(kind, item_id, {**current, **changes})
        record_response(tx, request, response, now)
        return response

    return _presented(kind, deps.store.run_transaction(work))


def remove(kind: Kind, item_id: str, actor: Actor, deps: Deps) -> None:
    """Delete the record; NotFound if there is none, Conflict while a window holds it."""
    actor.require("dispatcher")
    path = _path(kind, item_id)

    def work(tx: Transaction) -> None:
        found = tx.get(path)
        if found is None:
            raise NotFound(f"no {kind.name} {item_id}")
        _check_free(kind, item_id, found.data, "remove")
        tx.delete(path)

    deps.store.run_transaction(work)


def _check_free(kind: Kind, item_id: str, data: Mapping[str, Any], what: str) -> None:
    if data.get("window_id"):
        raise Conflict(
            f"cannot {what} {kind.name} {item_id}: dispatch window {data['window_id']} holds it"
        )


def _document(kind: Kind, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The document fields of a request's fields: a fence's geometry checked and stored as the
    job reads it (a GeoJSON string: Firestore has no nested arrays)."""
    document = dict(fields)
    nulls = [k for k, v in document.items() if v is None and k not in kind.clearable]
    if nulls:
        raise ValidationError(
            f"invalid {kind.name}", [FieldError(k, "may not be null") for k in sorted(nulls)]
        )
    if "status" in document and document["status"] not in kind.desk_statuses:
        allowed = " or ".join(sorted(kind.desk_statuses))
        raise ValidationError(
            f"invalid {kind.name}",
            [FieldError("status", f"the desk sets {allowed}; the others are the saga's")],
        )
    if kind is GEOFENCE and "geometry" in document:
        check_fence_geometry(document["geometry"])
        document["geometry"] = json.dumps(document["geometry"], separators=(",", ":"))
    return document


# Geofence polygons --------------------------------------------------------------------------------


def check_fence_geometry(geometry: Mapping[str, Any]) -> None:
    """A GeoJSON Polygon or MultiPolygon the geofence job can use as sent: positions in lat/lng
    range, every ring closed with at least four positions, at most ``MAX_FENCE_VERTICES``
    positions, valid as OGC defines it (no self-intersection; ``explain_validity`` says where),
    a positive area of at most ``MAX_FENCE_AREA_KM2``. ValidationError lists what is wrong."""
    shape_type = geometry.get("type")
    if shape_type == "Polygon":
        polygons = [geometry.get("coordinates") or []]
    elif shape_type == "MultiPolygon":
        polygons = list(geometry.get("coordinates") or [])
    else:
        _refuse(
            FieldError("geometry.type", f"a fence is a Polygon or a MultiPolygon, not {shape_type}")
        )
    errors: list[FieldError] = []
    vertices = 0
    for p, rings in enumerate(polygons):
        if not rings:
            errors.append(FieldError(_where(shape_type, p), "a polygon needs an exterior ring"))
        for r, ring in enumerate(rings):
            where = f"{_where(shape_type, p)}.{r}"
            vertices += len(ring)
            for v, (lng, lat) in enumerate(ring):
                if not (-180 <= lng <= 180 and -90 <= lat <= 90):
                    errors.append(
                        FieldError(f"{where}.{v}", "a position is [lng, lat] within ±180, ±90")
                    )
            if len(ring) < 4:
                errors.append(FieldError(where, "a ring needs at least four positions"))
            elif ring[0] != ring[-1]:
                errors.append(FieldError(where, "a ring is closed: its last position is its first"))
    if vertices > MAX_FENCE_VERTICES:
        errors.append(
            FieldError(
                "geometry", f"{vertices} positions; a fence has at most {MAX_FENCE_VERTICES}"
            )
        )
    if errors:
        _refuse(*errors)
    # Imported here: only a fence's write needs shapely, and the service's cold start (measured
    # from the first /healthz) need not load it (~20 ms).
    from shapely.geometry import shape
    from shapely.validation import explain_validity

    polygon = shape(geometry)
    if not polygon.is_valid:
        _refuse(FieldError("geometry", f"not a valid polygon: {explain_validity(polygon)}"))
    area_km2 = _area_m2(polygon) / 1e6
    if not 0 < area_km2 <= MAX_FENCE_AREA_KM2:
        _refuse(
            FieldError(
                "geometry",
                f"an area of {area_km2:,.3f} km²; a fence covers more than nothing and at most "
                f"{MAX_FENCE_AREA_KM2:,.0f} km²",
            )
        )


def _where(shape_type: str, polygon: int) -> str:
    return "geometry.coordinates" if shape_type == "Polygon" else f"geometry.coordinates.{polygon}"


def _refuse(*errors: FieldError) -> NoReturn:
    raise ValidationError("invalid geofence", errors)


def _area_m2(polygon: Any) -> float:
    """The area in square metres, in a local equirectangular frame around the centroid (the
    frame the job buffers margins in)."""
    import shapely

    centre = polygon.centroid
    scale = (METRES_PER_DEGREE * max(math.cos(math.radians(centre.y)), 1e-6), METRES_PER_DEGREE)
    local = shapely.transform(polygon, lambda xy: (xy - (centre.x, centre.y)) * scale)
    return float(local.area)
