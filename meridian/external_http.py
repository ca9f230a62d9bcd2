"""HTTP adapters of the external ports that change something outside: SMS, billing, webhooks.

The same clients talk to the embedded stand-ins and to real providers; only the base URL and the
credential differ (chosen in ``meridian.adapters``). Every call carries the caller's idempotency
key. Provider failures and timeouts become Unavailable, so the event is retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import httpx

from meridian.domain.errors import Unavailable, ValidationError
from meridian.ports import (
    BillingApi,
    Charge,
    SmsGateway,
    SmsReceipt,
    WebhookResponse,
    WebhookSender,
)


def _headers(api_key: str | None, idempotency_key: str) -> dict[str, str]:
    headers = {"Idempotency-Key": idempotency_key}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class HttpSmsGateway(SmsGateway):
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 20.0) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=timeout_s)
        self._api_key = api_key

    def send(self, to: str, body: str, idempotency_key: str) -> SmsReceipt:
        try:
            response = self._client.post(
                "/v1/messages",
                json={"to": to, "body": body},
                headers=_headers(self._api_key, idempotency_key),
            )
        except httpx.HTTPError as e:
            raise Unavailable(f"SMS gateway unreachable: {e!r}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Unavailable(f"SMS gateway answered {response.status_code}")
        if response.status_code >= 400:
            raise ValidationError(f"SMS gateway refused the message: {response.text[:200]}")
        return SmsReceipt(message_id=response.json()["message_id"], accepted_at=datetime.now(UTC))


class HttpBillingApi(BillingApi):
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 20.0) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=timeout_s)
        self._api_key = api_key

    def charge(self, charge: Charge, idempotency_key: str) -> str:
        try:
            response = self._client.post(
                "/v1/charges",
                json={
                    "client_id": charge.client_id,
                    "reference": charge.reference,
                    "amount_minor": charge.amount_minor,
                    "currency": charge.currency,
                    "description": charge.description,
                },
                headers=_headers(self._api_key, idempotency_key),
            )
        except httpx.HTTPError as e:
            raise Unavailable(f"billing API unreachable: {e!r}") from None
        if response.status_code == 409 and "charge_id" in response.json():
            # Charged before under this key (a redelivery after a crash): the first charge stands.
            return str(response.json()["charge_id"])
        if response.status_code >= 500 or response.status_code == 429:
            raise Unavailable(f"billing API answered {response.status_code}")
        if response.status_code >= 400:
            raise ValidationError(f"billing API refused the charge: {response.text[:200]}")
        return str(response.json()["charge_id"])


class HttpWebhookSender(WebhookSender):
    """Plain POSTs to client endpoints. Redirects are not followed (a redirect could lead to an
    address the SSRF check refused); the caller checks the destination before each send."""

    def __init__(self) -> None:
        self._client = httpx.Client(follow_redirects=False)

    def send(self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float) -> WebhookResponse:
        try:
            response = self._client.post(url, content=body, headers=dict(headers), timeout=timeout_s)
        except httpx.HTTPError as e:
            raise Unavailable(f"webhook endpoint unreachable: {e!r}") from None
        return WebhookResponse(response.status_code, dict(response.headers), response.content[:4096])
