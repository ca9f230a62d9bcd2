"""Geofences: shapes, hysteresis margins, loading, and the vectorised spatial index.

A fence is a GeoJSON Polygon (holes allowed), MultiPolygon, or a circle (a Point with
``radius_m``). Documents in the ``geofences`` collection look like::

    {"name": "Depot A", "geometry": "<GeoJSON geometry as a string>", "radius_m": 150,
     "margin_m": 15, "active": true, "active_from": "2024-05-01T08:00:00Z"}

``geometry`` is a string because Firestore cannot store GeoJSON's nested arrays; a map is also
accepted. The GeoJSON file form is a FeatureCollection whose features carry the same fields as
properties, and ``id`` as the fence id.

Margins are in metres, so each fence is buffered in a local equirectangular frame around its own
centroid (error well under a metre at city scale) and projected back to degrees once, at load.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import shapely
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from pipelines.geofence.model import Located, Ping

METRES_PER_DEGREE = 111_320.0
CIRCLE_SEGMENTS = 16  # per quarter circle: < 0.2 % radius error
COLLECTION = "geofences"
_NONE: frozenset[str] = frozenset()


class FenceError(ValueError):
    """A fence definition that cannot be used; loading skips it and reports why."""


@dataclass(frozen=True)
class Geofence:
    fence_id: str
    geometry: BaseGeometry  # in degrees (x = lng, y = lat)
    margin_m: float
    active_from: float | None = None  # epoch seconds; the fence applies to pings from then on

    def shrunk_and_grown(self) -> tuple[BaseGeometry, BaseGeometry]:
        """(inside-for-entering, inside-for-not-exiting) shapes, in degrees."""
        centre = self.geometry.centroid
        lng0, lat0 = centre.x, centre.y
        k_lng = METRES_PER_DEGREE * max(math.cos(math.radians(lat0)), 1e-6)

        def to_metres(xy: np.ndarray) -> np.ndarray:
            return np.column_stack(
                ((xy[:, 0] - lng0) * k_lng, (xy[:, 1] - lat0) * METRES_PER_DEGREE)
            )

        def to_degrees(xy: np.ndarray) -> np.ndarray:
            return np.column_stack((xy[:, 0] / k_lng + lng0, xy[:, 1] / METRES_PER_DEGREE + lat0))

        local = shapely.transform(self.geometry, to_metres)
        inner = local.buffer(-self.margin_m, quad_segs=CIRCLE_SEGMENTS)
        outer = local.buffer(self.margin_m, quad_segs=CIRCLE_SEGMENTS)
        return shapely.transform(inner, to_degrees), shapely.transform(outer, to_degrees)


class FenceSnapshot(NamedTuple):
    """The fences as loaded at one moment: an element of the job's fence side input.

    ``effective_from`` is the event time from which the snapshot applies (``-inf``: to every ping,
    however old); a ping is located against the newest snapshot in effect at its own time, so a
    late ping is judged by the fences of its time, whichever order things arrive in.
    """

    effective_from: float
    version: str
    fences: tuple[Geofence, ...]


def snapshot(fences: Iterable[Geofence], effective_from: float = -math.inf) -> FenceSnapshot:
    fences = tuple(fences)
    return FenceSnapshot(effective_from, fingerprint(fences), fences)


def fence_from_mapping(fence_id: str, data: Mapping[str, Any], default_margin_m: float) -> Geofence:
    """Build a fence from a document's fields or a GeoJSON feature's properties + geometry."""
    raw = data.get("geometry")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FenceError(f"geofence {fence_id}: geometry is not JSON: {e}") from None
    if not isinstance(raw, Mapping):
        raise FenceError(f"geofence {fence_id}: no geometry")
    try:
        geometry = shape(raw)
    except Exception as e:  # shapely raises several types for malformed GeoJSON
        raise FenceError(f"geofence {fence_id}: bad geometry: {e}") from None
    margin = float(data.get("margin_m", default_margin_m))
    if margin < 0:
        raise FenceError(f"geofence {fence_id}: margin_m must not be negative")
    if isinstance(geometry, Point):
        radius = data.get("radius_m")
        if radius is None or float(radius) <= 0:
            raise FenceError(f"geofence {fence_id}: a circle needs a positive radius_m")
        geometry = _circle(geometry, float(radius))
    elif geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise FenceError(f"geofence {fence_id}: {geometry.geom_type} is not a fence shape")
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    if geometry.is_empty:
        raise FenceError(f"geofence {fence_id}: empty geometry")
    return Geofence(fence_id, geometry, margin, _epoch(data.get("active_from")))


def _circle(centre: Point, radius_m: float) -> BaseGeometry:
    k_lng = METRES_PER_DEGREE * max(math.cos(math.radians(centre.y)), 1e-6)
    unit = Point(0, 0).buffer(1.0, quad_segs=CIRCLE_SEGMENTS)
    return shapely.transform(
        unit,
        lambda xy: np.column_stack(
            (
                xy[:, 0] * radius_m / k_lng + centre.x,
                xy[:, 1] * radius_m / METRES_PER_DEGREE + centre.y,
            )
        ),
    )


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    when = (
        value
        if isinstance(value, datetime)
        else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass
class FenceSet:
    """An immutable snapshot of the fences with its spatial index (STRtree over grown shapes)."""

    fences: tuple[Geofence, ...]
    version: str = ""
    _ids: np.ndarray = field(init=False, repr=False)
    _inner: np.ndarray = field(init=False, repr=False)
    _outer: np.ndarray = field(init=False, repr=False)
    _tree: shapely.STRtree = field(init=False, repr=False)
    _from: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shapes = [f.shrunk_and_grown() for f in self.fences]
        self._ids = np.array([f.fence_id for f in self.fences], dtype=object)
        self._inner = np.array([s[0] for s in shapes], dtype=object)
        self._outer = np.array([s[1] for s in shapes], dtype=object)
        self._from = np.array(
            [f.active_from if f.active_from is not None else -np.inf for f in self.fences],
            dtype=float,
        )
        shapely.prepare(self._inner)
        shapely.prepare(self._outer)
        self._tree = shapely.STRtree(self._outer)
        if not self.version:
            self.version = fingerprint(self.fences)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild the index after unpickling rather than pickling the tree.
        return (FenceSet, (self.fences, self.version))

    def __len__(self) -> int:
        return len(self.fences)

    def locate(self, pings: Sequence[Ping]) -> list[Located]:
        """Fence memberships of every ping, with one index query for the whole batch."""
        if not pings:
            return []
        if not len(self.fences):
            return [Located(p, _NONE, _NONE) for p in pings]
        lngs = np.fromiter((p.lng for p in pings), float, len(pings))
        lats = np.fromiter((p.lat for p in pings), float, len(pings))
        hit_ping, hit_fence = self._tree.query(shapely.points(lngs, lats), predicate="intersects")
        if not len(hit_ping):
            return [Located(p, _NONE, _NONE) for p in pings]
        times = np.fromiter((p.ts for p in pings), float, len(pings))
        active = self._from[hit_fence] <= times[hit_ping]
        hit_ping, hit_fence = hit_ping[active], hit_fence[active]
        in_inner = shapely.intersects_xy(self._inner[hit_fence], lngs[hit_ping], lats[hit_ping])
        # Most pings are in no fence: only the few that are get sets of their own.
        inner: dict[int, set[str]] = defaultdict(set)
        outer: dict[int, set[str]] = defaultdict(set)
        for i, fence_id, deep in zip(
            hit_ping.tolist(), self._ids[hit_fence].tolist(), in_inner.tolist(), strict=True
        ):
            outer[i].add(fence_id)
            if deep:
                inner[i].add(fence_id)
        return [
            Located(p, frozenset(inner[i]), frozenset(outer[i]))
            if i in outer
            else Located(p, _NONE, _NONE)
            for i, p in enumerate(pings)
        ]

    def locate_naive(self, pings: Sequence[Ping]) -> list[Located]:
        """The same answer with a plain loop over every fence (the benchmark's baseline)."""
        out = []
        for p in pings:
            point = Point(p.lng, p.lat)
            inner, outer = set(), set()
            for fid, i, o, start in zip(
                self._ids, self._inner, self._outer, self._from, strict=True
            ):
                if start <= p.ts and o.intersects(point):
                    outer.add(fid)
                    if i.intersects(point):
                        inner.add(fid)
            out.append(Located(p, frozenset(inner), frozenset(outer)))
        return out


def fingerprint(fences: Iterable[Geofence]) -> str:
    digest = hashlib.sha256()
    for f in sorted(fences, key=lambda f: f.fence_id):
        digest.update(f"{f.fence_id}|{f.margin_m}|{f.active_from}|{f.geometry.wkb_hex}\n".encode())
    return digest.hexdigest()[:16]


# Loading -----------------------------------------------------------------------------------------


def fences_from_geojson(
    path: Path | str, default_margin_m: float
) -> tuple[list[Geofence], list[str]]:
    """Fences of a GeoJSON FeatureCollection file, and the reasons any feature was skipped."""
    collection = json.loads(Path(path).read_text())
    fences, problems = [], []
    for n, feature in enumerate(collection.get("features", [])):
        props = dict(feature.get("properties") or {})
        fence_id = str(feature.get("id") or props.get("id") or f"feature-{n}")
        if props.get("active", True) is False:
            continue
        try:
            fences.append(
                fence_from_mapping(
                    fence_id, {**props, "geometry": feature.get("geometry")}, default_margin_m
                )
            )
        except FenceError as e:
            problems.append(str(e))
    return fences, problems


def fences_from_documents(
    documents: Iterable[tuple[str, Mapping[str, Any]]], default_margin_m: float
) -> tuple[list[Geofence], list[str]]:
    fences, problems = [], []
    for fence_id, data in documents:
        if data.get("active", True) is False:
            continue
        try:
            fences.append(fence_from_mapping(fence_id, data, default_margin_m))
        except FenceError as e:
            problems.append(str(e))
    return fences, problems
