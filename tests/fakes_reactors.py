"""Fakes of the external ports the reactors use. Each subclasses the real port."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from meridian.domain.errors import NotFound, Unavailable
from meridian.ports import (
    BillingApi,
    BlobStore,
    Charge,
    GeoPoint,
    SmsGateway,
    SmsReceipt,
    TravelTime,
    WebhookResponse,
    WebhookSender,
)


class FakeSmsGateway(SmsGateway):
    """Sends once per idempotency key, like a real provider; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[str, str]] = {}
        self.calls = 0
        self.down = False

    def send(self, to: str, body: str, idempotency_key: str) -> SmsReceipt:
        self.calls += 1
        if self.down:
            raise Unavailable("fake gateway down")
        self.sent.setdefault(idempotency_key, (to, body))
        return SmsReceipt(message_id=f"sms-{idempotency_key}", accepted_at=datetime.now(UTC))


class FakeBillingApi(BillingApi):
    def __init__(self) -> None:
        self.charges: dict[str, Charge] = {}
        self.calls = 0

    def charge(self, charge: Charge, idempotency_key: str) -> str:
        self.calls += 1
        self.charges.setdefault(idempotency_key, charge)
        return f"ch-{idempotency_key}"


class FakeWebhookSender(WebhookSender):
    """Answers from a script of statuses (the last one repeats); records every request."""

    def __init__(self, statuses: list[int] | None = None, headers: Mapping[str, str] | None = None) -> None:
        self.statuses = list(statuses or [200])
        self.headers = dict(headers or {})
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    def send(self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float) -> WebhookResponse:
        self.requests.append((url, dict(headers), body))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return WebhookResponse(status, self.headers)


class FakeTravelTime(TravelTime):
    """Ten minutes between any two different points."""

    def seconds(self, origin: GeoPoint, destination: GeoPoint, depart_at: datetime) -> float:
        return 0.0 if origin == destination else 600.0


class FakeBlobStore(BlobStore):
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str) -> str:
        self.blobs[f"mem://{key}"] = data
        return f"mem://{key}"

    def get(self, reference: str) -> bytes:
        if reference not in self.blobs:
            raise NotFound(reference)
        return self.blobs[reference]

    def exists(self, reference: str) -> bool:
        return reference in self.blobs
