"""Client webhook endpoints: registration (command service), signing and retry schedule (webhook
reactor). Both services need the same records and rules, so they live here once.

Deliveries follow the Standard Webhooks spec: ``webhook-id`` (the event id, stable across retries
so receivers can deduplicate), ``webhook-timestamp`` and ``webhook-signature`` (``v1,`` HMAC-SHA256
of ``id.timestamp.body`` with the endpoint's ``whsec_`` secret), signed by the reference library.

Where an endpoint may point is a ``WebhookPolicy``, chosen once by each service's bootstrap and
checked at registration and again before every send (DNS can change, and the rule may have
changed since an endpoint was registered). URLs that resolve to private, loopback, link-local or
otherwise internal addresses are refused (server-side request forgery);
``MERIDIAN_WEBHOOK_ALLOW_NETWORKS`` (CIDRs or host names, comma-separated) lets local development
and tests point at loopback receivers. Plain ``http://`` is for local and allow-listed networks
only: in production (the ``gcp`` backend) an endpoint must be ``https://``, as Stripe requires
for live webhooks, so the lean plain-HTTP client (``meridian.wire.blocking``) never meets an
outside server.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import random
import secrets
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from standardwebhooks.webhooks import Webhook

from meridian.config import Settings
from meridian.domain.errors import NotFound, PermissionDenied, ValidationError
from meridian.ports import DocumentStore, Query, Transaction

ENDPOINTS = "webhook_endpoints"
DELIVERIES = "webhook_deliveries"
ALLOW_ENV = "MERIDIAN_WEBHOOK_ALLOW_NETWORKS"
# Standard Webhooks' recommended schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h (about a day and a half); each delay gets ±10 % jitter so retries do not stampede.
RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.1
MAX_RETRY_AFTER_S = 86400.0
MAX_ENDPOINTS_PER_CLIENT = 20


# Where an endpoint may point -------------------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """Destinations allowed despite being internal (local development and tests only)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        networks, hosts = [], set()
        for item in filter(None, (part.strip() for part in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower())
        return cls(tuple(networks), frozenset(hosts))

    @classmethod
    def from_env(cls) -> AllowList:
        return cls.parse(os.environ.get(ALLOW_ENV, ""))

    def allows(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return host.lower() in self.hosts or any(address in n for n in self.networks)


@dataclass(frozen=True)
class WebhookPolicy:
    """Where client endpoints may point: internal destinations the allow list names, and, with
    ``https_only`` (production), ``https://`` URLs only."""

    allow: AllowList = AllowList()
    https_only: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        """Production (the ``gcp`` backend) takes ``https://`` endpoints only."""
        return cls(AllowList.from_env(), https_only=settings.backend == "gcp")


HTTPS_RULE = (
    "webhook URLs must be https:// in production; plain http:// is for local and allow-listed "
    "networks only"
)


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_destination(url: str, policy: WebhookPolicy) -> None:
    """Raise PermissionDenied if any address ``url`` resolves to is internal and not
    allow-listed; ValidationError if it is not an absolute http(s) URL, is plain ``http://``
    where the policy takes ``https://`` only, or does not resolve."""
    scheme, host, port = _destination(url)
    if policy.https_only and scheme != "https":
        raise ValidationError(f"{HTTPS_RULE}, not {url!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValidationError(f"webhook host {host!r} does not resolve: {e}") from None
    for info in infos:
        address, internal = _classified(str(info[4][0]))
        if internal and not policy.allow.allows(host, address):
            raise PermissionDenied(
                f"webhook URL {url!r} resolves to {address}, a private, loopback or link-local "
                f"address; only public endpoints are allowed (see {ALLOW_ENV})"
            )


# Checked before every send: the parsing is remembered, the name is resolved again each time.
@functools.lru_cache(maxsize=1024)
def _destination(url: str) -> tuple[str, str, int]:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationError(f"webhook URL must be an absolute http(s) URL, not {url!r}")
    return parsed.scheme, parsed.hostname, parsed.port or 443


@functools.lru_cache(maxsize=1024)
def _classified(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, bool]:
    """An address getaddrinfo gave, and whether it is internal."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    return address, _internal(address)


# Registration (command service) ------------------------------------------------------------------


def new_secret() -> str:
    return f"whsec_{base64.b64encode(secrets.token_bytes(32)).decode()}"


def _public(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "secret"}


def register_endpoint(
    store: DocumentStore,
    client_id: str,
    url: str,
    event_types: Sequence[str],
    policy: WebhookPolicy,
    now: datetime,
) -> dict[str, Any]:
    """Register an endpoint; the answer carries its ``whsec_`` secret (shown this once).
    ValidationError or PermissionDenied if ``policy`` refuses its URL."""
    check_destination(url, policy)
    from meridian.domain.events import EVENT_TYPES

    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(f"unknown event types: {', '.join(unknown)}")
    webhook_id = f"wh_{uuid.uuid4().hex[:20]}"
    endpoint = {
        "webhook_id": webhook_id,
        "client_id": client_id,
        "url": url,
        "event_types": sorted(set(event_types)),
        "secret": new_secret(),
        "status": "active",
        "disabled_reason": None,
        "created_at": now,
    }

    def write(tx: Transaction) -> None:
        existing = tx.query(Query(ENDPOINTS).where("client_id", "==", client_id))
        if len(existing) >= MAX_ENDPOINTS_PER_CLIENT:
            raise ValidationError(
                f"a client may register at most {MAX_ENDPOINTS_PER_CLIENT} endpoints"
            )
        tx.create(f"{ENDPOINTS}/{webhook_id}", endpoint)

    store.run_transaction(write)
    return endpoint


def get_endpoint(store: DocumentStore, client_id: str, webhook_id: str) -> dict[str, Any]:
    document = store.get(f"{ENDPOINTS}/{webhook_id}")
    if document is None or document.data["client_id"] != client_id:
        raise NotFound(f"no webhook endpoint {webhook_id}")
    return _public(document.data)


def list_endpoints(store: DocumentStore, client_id: str) -> list[dict[str, Any]]:
    documents = store.query(Query(ENDPOINTS).where("client_id", "==", client_id))
    return sorted((_public(d.data) for d in documents), key=lambda e: e["created_at"])


def delete_endpoint(store: DocumentStore, client_id: str, webhook_id: str) -> None:
    get_endpoint(store, client_id, webhook_id)
    store.delete(f"{ENDPOINTS}/{webhook_id}")


def delivery_log(
    store: DocumentStore, client_id: str, webhook_id: str, limit: int = 100
) -> list[dict[str, Any]]:
    get_endpoint(store, client_id, webhook_id)
    documents = store.query(Query(DELIVERIES).where("webhook_id", "==", webhook_id))
    entries = sorted((dict(d.data) for d in documents), key=lambda d: d["created_at"], reverse=True)
    return [{k: v for k, v in e.items() if k != "body"} for e in entries[:limit]]


def replay(
    store: DocumentStore, client_id: str, webhook_id: str, since: datetime | None, now: datetime
) -> int:
    """Re-enable the endpoint and schedule its failed deliveries (since ``since``) again, now."""
    get_endpoint(store, client_id, webhook_id)
    documents = store.query(Query(DELIVERIES).where("webhook_id", "==", webhook_id))
    again = [
        d
        for d in documents
        if d.data["status"] == "failed" and (since is None or d.data["created_at"] >= since)
    ]
    writes: list[tuple[str, str, Mapping[str, Any] | None]] = [
        ("update", f"{ENDPOINTS}/{webhook_id}", {"status": "active", "disabled_reason": None})
    ]
    writes += [
        ("update", d.path, {"status": "pending", "attempts": 0, "next_attempt_at": now})
        for d in again
    ]
    store.batch_write(writes)
    return len(again)


# Sending (webhook reactor) -----------------------------------------------------------------------


def signed_headers(secret: str, webhook_id: str, body: bytes, at: datetime) -> dict[str, str]:
    signature = _signer(secret).sign(webhook_id, at, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


@functools.lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)  # decodes the secret once per endpoint, not once per send


def retry_delay_s(
    attempts_made: int, retry_after: str | None, rng: random.Random | None = None
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` failures; None when the schedule is
    exhausted. A receiver's ``Retry-After`` (seconds) is honoured when it asks for longer."""
    if attempts_made > len(RETRY_SCHEDULE_S):
        return None
    base = RETRY_SCHEDULE_S[attempts_made - 1]
    delay = base * (1 + (rng or random).uniform(-JITTER, JITTER))
    if retry_after is not None and retry_after.strip().isdigit():
        delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER_S))
    return delay


def next_attempt(now: datetime, delay_s: float) -> datetime:
    return now + timedelta(seconds=delay_s)
