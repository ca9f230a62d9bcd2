"""Local adapters of the external ports: travel time by great-circle distance, blobs on disk."""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from meridian.domain.errors import NotFound, ValidationError
from meridian.ports import BlobStore, GeoPoint, TravelTime

EARTH_RADIUS_M = 6_371_000.0
# Urban average speeds (km/h) by hour of the day, local time of the depot: slow in the rush hours.
SPEED_KMH_BY_HOUR = (
    38, 40, 40, 40, 38, 34, 28, 20, 16, 18, 22, 24,
    24, 24, 23, 22, 20, 16, 15, 18, 24, 30, 34, 36,
)  # fmt: skip
ROAD_FACTOR = 1.3  # roads are longer than the great circle
STOP_OVERHEAD_S = 120.0  # park, walk, hand over


def great_circle_m(a: GeoPoint, b: GeoPoint) -> float:
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat, dlng = lat2 - lat1, math.radians(b.lng - a.lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


class GreatCircleTravelTime(TravelTime):
    """Distance times the road factor at the speed of the hour of departure, plus a fixed stop
    overhead; nothing from a point to itself (already there: no drive, no stop to make)."""

    def seconds(self, origin: GeoPoint, destination: GeoPoint, depart_at: datetime) -> float:
        if origin == destination:
            return 0.0
        speed_mps = SPEED_KMH_BY_HOUR[depart_at.hour] / 3.6
        return great_circle_m(origin, destination) * ROAD_FACTOR / speed_mps + STOP_OVERHEAD_S


class LocalBlobStore(BlobStore):
    """Blobs as files under ``<data_dir>/blobs``; references are ``file://`` URLs."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValidationError(f"blob key {key!r} is empty, absolute or climbs")
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root):  # a symbolic link out of the store
            raise ValidationError(f"blob key {key!r} escapes the blob store")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers never see half a blob
        return path.as_uri()

    def _from_reference(self, reference: str) -> Path:
        parsed = urlparse(reference)
        if parsed.scheme != "file":
            raise NotFound(f"{reference} is not a local blob reference")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self._root):
            raise NotFound(f"{reference} is outside the blob store")
        return path

    def get(self, reference: str) -> bytes:
        path = self._from_reference(reference)
        if not path.is_file():
            raise NotFound(f"no blob {reference}")
        return path.read_bytes()

    def exists(self, reference: str) -> bool:
        try:
            return self._from_reference(reference).is_file()
        except NotFound:
            return False
