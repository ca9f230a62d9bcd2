"""Google-side adapters of the external ports: Cloud Storage blobs, Routes API travel times, and
provider credentials from Secret Manager. Imported only on the gcp backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from meridian.domain.errors import NotFound, Unavailable, ValidationError
from meridian.ports import BlobStore, GeoPoint, TravelTime

ROUTES_URL = "https://routes.googleapis.com/directions/v2:computeRoutes"


def secret(project: str, name: str) -> str:
    """The latest version of a Secret Manager secret (provider API keys)."""
    from google.cloud import secretmanager

    client = secretmanager.SecretManagerServiceClient()
    path = f"projects/{project}/secrets/{name}/versions/latest"
    return client.access_secret_version(name=path).payload.data.decode()


class GcsBlobStore(BlobStore):
    """Blobs as objects of one bucket; references are ``gs://<bucket>/<key>``. ``client`` is a
    ``storage.Client`` (one is built when not given)."""

    def __init__(self, bucket: str, client: Any = None) -> None:
        if client is None:
            from google.cloud import storage  # type: ignore[attr-defined]

            client = storage.Client()
        self._bucket = client.bucket(bucket)

    def put(self, key: str, data: bytes, content_type: str) -> str:
        # Cloud Storage would keep such a name as it is where a file system resolves it: refused
        # on both, so that no caller depends on the difference.
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValidationError(f"blob key {key!r} is empty, absolute or climbs")
        self._bucket.blob(key).upload_from_string(data, content_type=content_type)
        return f"gs://{self._bucket.name}/{key}"

    def _blob_name(self, reference: str) -> str:
        prefix = f"gs://{self._bucket.name}/"
        if not reference.startswith(prefix):
            raise NotFound(f"{reference} is not in bucket {self._bucket.name}")
        return reference.removeprefix(prefix)

    def get(self, reference: str) -> bytes:
        from google.api_core import exceptions as gexc

        try:
            data: bytes = self._bucket.blob(self._blob_name(reference)).download_as_bytes()
        except gexc.NotFound:
            raise NotFound(f"no blob {reference}") from None
        return data

    def exists(self, reference: str) -> bool:
        try:
            return bool(self._bucket.blob(self._blob_name(reference)).exists())
        except NotFound:
            return False


class RoutesApiTravelTime(TravelTime):
    """Traffic-aware driving time from the Routes API (computeRoutes, duration only).
    ``transport`` replaces the network (tests)."""

    def __init__(
        self, api_key: str, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._api_key = api_key

    def seconds(self, origin: GeoPoint, destination: GeoPoint, depart_at: datetime) -> float:
        if origin == destination:
            return 0.0  # nothing to drive: not worth a billed request

        def waypoint(p: GeoPoint) -> dict[str, object]:
            return {"location": {"latLng": {"latitude": p.lat, "longitude": p.lng}}}

        body = {
            "origin": waypoint(origin),
            "destination": waypoint(destination),
            "travelMode": "DRIVE",
            "routingPreference": "TRAFFIC_AWARE",
            "departureTime": max(depart_at, datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        }
        headers = {"X-Goog-Api-Key": self._api_key, "X-Goog-FieldMask": "routes.duration"}
        try:
            response = self._client.post(ROUTES_URL, json=body, headers=headers)
            response.raise_for_status()
            return float(response.json()["routes"][0]["duration"].rstrip("s"))
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
            raise Unavailable(f"Routes API: {e!r}") from None
