"""HTTP adapters of the external ports that change something outside: SMS, billing, webhooks.

The same clients talk to the embedded stand-ins and to real providers; only the base URL and the
credential differ (chosen in ``meridian.adapters``). Every call carries the caller's idempotency
key. Provider failures and timeouts become Unavailable, so the event is retried. Plain
``http://`` calls take a lean keep-alive path, ``https://`` ones httpx (``meridian.wire.blocking``);
in production the webhook sender refuses plain ``http://`` (``https_only``, set in
``meridian.adapters`` for the ``gcp`` backend), as the registration rules do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from meridian.domain.errors import Unavailable, ValidationError
from meridian.ports import (
    BillingApi,
    Charge,
    SmsGateway,
    SmsReceipt,
    WebhookResponse,
    WebhookSender,
)
from meridian.wire.blocking import ExternalHttp, RequestFailed
from meridian.wire.http1 import Reply


def _headers(api_key: str | None, idempotency_key: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "Idempotency-Key": idempotency_key}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _json(reply: Reply) -> dict[str, Any]:
    """The JSON object of a reply; {} if the body is not one."""
    try:
        payload = json.loads(reply.body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


class HttpSmsGateway(SmsGateway):
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 20.0) -> None:
        self._url = f"{base_url.rstrip('/')}/v1/messages"
        self._http = ExternalHttp()
        self._api_key = api_key
        self._timeout_s = timeout_s

    def send(self, to: str, body: str, idempotency_key: str) -> SmsReceipt:
        try:
            reply = self._http.post(
                self._url,
                json.dumps({"to": to, "body": body}).encode(),
                _headers(self._api_key, idempotency_key),
                self._timeout_s,
            )
        except RequestFailed as e:
            raise Unavailable(f"SMS gateway unreachable: {e}") from None
        if reply.status >= 500 or reply.status == 429:
            raise Unavailable(f"SMS gateway answered {reply.status}")
        if reply.status >= 400:
            raise ValidationError(f"SMS gateway refused the message: {reply.body[:200]!r}")
        message_id = _json(reply).get("message_id")
        if not message_id:
            raise Unavailable(f"SMS gateway answered {reply.status} without a message id")
        return SmsReceipt(message_id=str(message_id), accepted_at=datetime.now(UTC))


class HttpBillingApi(BillingApi):
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 20.0) -> None:
        self._url = f"{base_url.rstrip('/')}/v1/charges"
        self._http = ExternalHttp()
        self._api_key = api_key
        self._timeout_s = timeout_s

    def charge(self, charge: Charge, idempotency_key: str) -> str:
        payload = {
            "client_id": charge.client_id,
            "reference": charge.reference,
            "amount_minor": charge.amount_minor,
            "currency": charge.currency,
            "description": charge.description,
        }
        try:
            reply = self._http.post(
                self._url,
                json.dumps(payload).encode(),
                _headers(self._api_key, idempotency_key),
                self._timeout_s,
            )
        except RequestFailed as e:
            raise Unavailable(f"billing API unreachable: {e}") from None
        answer = _json(reply)
        if reply.status == 409 and "charge_id" in answer:
            # Charged before under this key (a redelivery after a crash): the first charge stands.
            return str(answer["charge_id"])
        if reply.status >= 500 or reply.status == 429:
            raise Unavailable(f"billing API answered {reply.status}")
        if reply.status >= 400:
            raise ValidationError(f"billing API refused the charge: {reply.body[:200]!r}")
        if "charge_id" not in answer:
            raise Unavailable(f"billing API answered {reply.status} without a charge id")
        return str(answer["charge_id"])


class HttpWebhookSender(WebhookSender):
    """Plain POSTs to client endpoints. Redirects are not followed (a redirect could lead to an
    address the SSRF check refused); the caller checks the destination before each send. With
    ``https_only`` (production) a plain ``http://`` endpoint is refused unsent (ValidationError:
    retrying will not help), whatever the caller checked."""

    def __init__(self, https_only: bool = False) -> None:
        self._http = ExternalHttp()
        self._https_only = https_only

    def send(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> WebhookResponse:
        if self._https_only and not url.startswith("https://"):
            raise ValidationError(f"webhook endpoints must be https:// in production, not {url!r}")
        try:
            reply = self._http.post(url, body, headers, timeout_s)
        except RequestFailed as e:
            raise Unavailable(f"webhook endpoint unreachable: {e}") from None
        return WebhookResponse(reply.status, reply.headers, reply.body[:4096])
