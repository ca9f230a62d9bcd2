"""Stand-ins for the Google services behind the external ports' gcp adapters, at the boundary
each adapter talks to (no network): Cloud Storage's client (``storage.Client``), the Routes API's
``computeRoutes`` (an httpx transport) and the Route Optimization API's client
(``RouteOptimizationClient.optimize_tours``). Each answers as the service documents it, in the
shapes of Google's own client types, and can be made to fail."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from google.api_core import exceptions as api
from google.maps import routeoptimization_v1 as ro

# Cloud Storage -----------------------------------------------------------------------------------


class StubStorageClient:
    """Stands in for ``storage.Client``: buckets of objects in memory, shared by every client
    built over the same ``objects``."""

    def __init__(self, objects: dict[tuple[str, str], bytes] | None = None) -> None:
        self.objects = {} if objects is None else objects

    def bucket(self, name: str) -> StubBucket:
        return StubBucket(self, name)


class StubBucket:
    def __init__(self, client: StubStorageClient, name: str) -> None:
        self.client, self.name = client, name

    def blob(self, name: str) -> StubBlob:
        return StubBlob(self, name)


class StubBlob:
    def __init__(self, bucket: StubBucket, name: str) -> None:
        self.bucket, self.name = bucket, name
        self._at = (bucket.name, name)

    def upload_from_string(self, data: bytes, content_type: str | None = None) -> None:
        self.bucket.client.objects[self._at] = bytes(data)

    def download_as_bytes(self) -> bytes:
        if self._at not in self.bucket.client.objects:
            raise api.NotFound(f"No such object: {self.bucket.name}/{self.name}")
        return self.bucket.client.objects[self._at]

    def exists(self) -> bool:
        return self._at in self.bucket.client.objects


# Routes API --------------------------------------------------------------------------------------

METERS_PER_SECOND = 25_000 / 3600


def geodesic_m(a_lat: float, a_lng: float, b_lat: float, b_lng: float) -> float:
    lat1, lat2 = math.radians(a_lat), math.radians(b_lat)
    dlat, dlng = lat2 - lat1, math.radians(b_lng - a_lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


class RoutesApiStandIn:
    """Answers ``computeRoutes`` as the Routes API does for a field mask of ``routes.duration``:
    the key and the mask are required, a traffic-aware departure must not be in the past, the
    duration is a string of seconds (``"734s"``). ``failing`` answers 503, ``silent`` times
    out."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.failing = False
        self.silent = False
        self.requests: list[dict[str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.silent:
            raise httpx.ReadTimeout("no answer", request=request)
        if self.failing:
            return _google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
        if request.url.path != "/directions/v2:computeRoutes" or request.method != "POST":
            return _google_error(404, "NOT_FOUND", f"{request.method} {request.url.path}")
        if request.headers.get("x-goog-api-key") != self.api_key:
            return _google_error(403, "PERMISSION_DENIED", "API key not valid.")
        if not request.headers.get("x-goog-fieldmask"):
            return _google_error(400, "INVALID_ARGUMENT", "FieldMask is a required parameter.")
        body = json.loads(request.content)
        self.requests.append(body)
        departure = datetime.fromisoformat(body["departureTime"].replace("Z", "+00:00"))
        if departure < datetime.now(UTC) - timedelta(seconds=60):
            return _google_error(400, "INVALID_ARGUMENT", "Timestamp must be set to a future time.")
        a, b = (body[end]["location"]["latLng"] for end in ("origin", "destination"))
        metres = geodesic_m(a["latitude"], a["longitude"], b["latitude"], b["longitude"])
        seconds = round(metres * 1.3 / METERS_PER_SECOND)
        return httpx.Response(200, json={"routes": [{"duration": f"{seconds}s"}]})


def _google_error(code: int, status: str, message: str) -> httpx.Response:
    return httpx.Response(
        code, json={"error": {"code": code, "message": message, "status": status}}
    )


# Route Optimization API --------------------------------------------------------------------------

Code = ro.SkippedShipment.Reason.Code


class StubRouteOptimization:
    """Stands in for ``RouteOptimizationClient`` at ``optimize_tours``: refuses a request whose
    time windows reach outside the model's global window (INVALID_ARGUMENT, as the API does),
    then plans greedily (each shipment, in order, on the first vehicle with the load and the time
    left to reach it inside its window) and skips the rest with the API's reason codes. ``fail``
    makes the next call raise it."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.fail: Exception | None = None

    def optimize_tours(self, request: Any, timeout: float | None = None) -> Any:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        model = request.model
        begin, end = model.global_start_time, model.global_end_time
        for shipment in model.shipments:
            for window in shipment.deliveries[0].time_windows:
                if window.start_time < begin or window.end_time > end:
                    raise api.InvalidArgument(
                        f"shipment {shipment.label}: time window outside the global window"
                    )
        speed = request.geodesic_meters_per_second or METERS_PER_SECOND
        vehicles = [
            {
                "at": (v.start_location.latitude, v.start_location.longitude),
                "clock": begin,
                "weight": v.load_limits["weight_g"].max_load,
                "parcels": v.load_limits["parcels"].max_load,
                "visits": [],
                "travelled_s": 0.0,
            }
            for v in model.vehicles
        ]
        skipped = []
        for index, shipment in enumerate(model.shipments):
            visit = shipment.deliveries[0]
            weight = shipment.load_demands["weight_g"].amount
            where = (visit.arrival_location.latitude, visit.arrival_location.longitude)
            window = visit.time_windows[0]
            fits = [v for v in vehicles if v["weight"] >= weight and v["parcels"] >= 1]
            placed = False
            for v in fits:
                drive_s = geodesic_m(*v["at"], *where) / speed
                arrival = max(v["clock"] + timedelta(seconds=drive_s), window.start_time)
                if arrival <= window.end_time:
                    v["visits"].append(
                        ro.ShipmentRoute.Visit(shipment_index=index, start_time=arrival)
                    )
                    v["clock"] = arrival + timedelta(seconds=visit.duration.total_seconds())
                    v["at"], v["travelled_s"] = where, v["travelled_s"] + drive_s
                    v["weight"] -= weight
                    v["parcels"] -= 1
                    placed = True
                    break
            if not placed:
                code = (
                    Code.CANNOT_BE_PERFORMED_WITHIN_VEHICLE_TIME_WINDOWS
                    if fits
                    else Code.DEMAND_EXCEEDS_VEHICLE_CAPACITY
                )
                skipped.append(
                    ro.SkippedShipment(
                        index=index,
                        label=shipment.label,
                        reasons=[ro.SkippedShipment.Reason(code=code)],
                    )
                )
        routes = []
        for number, (v, spec) in enumerate(zip(vehicles, model.vehicles, strict=True)):
            back_s = (
                geodesic_m(*v["at"], spec.end_location.latitude, spec.end_location.longitude)
                / speed
            )
            v["travelled_s"] += back_s if v["visits"] else 0.0
            routes.append(
                ro.ShipmentRoute(
                    vehicle_index=number,
                    vehicle_label=spec.label,
                    visits=v["visits"],
                    vehicle_start_time=begin,
                    vehicle_end_time=v["clock"] + timedelta(seconds=back_s)
                    if v["visits"]
                    else begin,
                )
            )
        return ro.OptimizeToursResponse(
            routes=routes,
            skipped_shipments=skipped,
            metrics=ro.OptimizeToursResponse.Metrics(
                total_cost=sum(v["travelled_s"] for v in vehicles)
            ),
        )
