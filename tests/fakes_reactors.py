"""Fakes of the external ports the reactors use. Each subclasses the real port and is held to its
contract (tests/contract/external_contract.py, run in tests/contract/test_<port>.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from meridian.domain.errors import NotFound, Unavailable, ValidationError
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
    """Charges once per idempotency key; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.charges: dict[str, Charge] = {}
        self.calls = 0
        self.down = False

    def charge(self, charge: Charge, idempotency_key: str) -> str:
        self.calls += 1
        if self.down:
            raise Unavailable("fake billing API down")
        self.charges.setdefault(idempotency_key, charge)
        return f"ch-{idempotency_key}"


class FakeWebhookSender(WebhookSender):
    """Answers from a script of statuses (the last one repeats; None: no answer, Unavailable) with
    ``headers`` and ``body``; records every request."""

    def __init__(
        self,
        statuses: list[int | None] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        self.statuses = list(statuses or [200])
        self.headers = dict(headers or {})
        self.body = body
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    def send(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> WebhookResponse:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status is None:
            raise Unavailable(f"no answer from {url} (scripted)")
        self.requests.append((url, dict(headers), body))
        answered = {name.lower(): value for name, value in self.headers.items()}
        return WebhookResponse(status, answered, self.body[:4096])


class FakeTravelTime(TravelTime):
    """Ten minutes between any two different points."""

    def seconds(self, origin: GeoPoint, destination: GeoPoint, depart_at: datetime) -> float:
        return 0.0 if origin == destination else 600.0


class FakeBlobStore(BlobStore):
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValidationError(f"blob key {key!r} is empty, absolute or climbs")
        self.blobs[f"mem://{key}"] = data
        return f"mem://{key}"

    def get(self, reference: str) -> bytes:
        if reference not in self.blobs:
            raise NotFound(reference)
        return self.blobs[reference]

    def exists(self, reference: str) -> bool:
        return reference in self.blobs
