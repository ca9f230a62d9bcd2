"""Client webhook endpoints: registration (command service), signing and retry schedule (webhook
reactor). Both services need the same records and rules, so they live here once.

Deliveries follow the Standard Webhooks spec: ``webhook-id`` (the event id, stable across retries
so receivers can deduplicate), ``webhook-timestamp`` and ``webhook-signature`` (``v1,`` HMAC-SHA256
of ``id.timestamp.body`` with the endpoint's ``whsec_`` secret), signed by the reference library.

A URL is read by ``parse_url``, which names what is wrong with a malformed one (a port out of
range, an unclosed IPv6 bracket, credentials, control characters, ...) as a ValidationError
rather than letting ``urllib.parse``'s ValueErrors escape. Where an endpoint may point is a
``WebhookPolicy``, chosen once by each service's bootstrap. Both are checked at registration and
again before every send (DNS can change, and the rules may have changed since an endpoint was
registered: the reactor disables an endpoint they now refuse, with the reason). URLs that
resolve to private, loopback, link-local or otherwise internal addresses are refused (server-side
request forgery); ``MERIDIAN_WEBHOOK_ALLOW_NETWORKS`` (CIDRs or host names, comma-separated) lets
local development and tests point at loopback receivers. A host name that does not exist is
refused too; one that cannot be resolved just now (the resolver timed out or failed) is
``Unavailable``: the delivery is retried on its schedule, and a registration is answered 503.
Plain ``http://`` is for local and allow-listed networks only: in production (the ``gcp``
backend) an endpoint must be ``https://``, as Stripe requires for live webhooks, so the lean
plain-HTTP client (``meridian.wire.blocking``) never meets an outside server.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import random
import re
import secrets
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from standardwebhooks.webhooks import Webhook

from meridian.config import Settings
from meridian.domain.errors import (
    LimitExceeded,
    NotFound,
    PermissionDenied,
    Unavailable,
    ValidationError,
)
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
        return cls(
            AllowList.parse(settings.webhook_allow_networks), https_only=settings.backend == "gcp"
        )


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


# What getaddrinfo answers for a name that does not exist, or has no address: a refusal. Any
# other failure (EAI_AGAIN: the resolver timed out or its server failed; EAI_FAIL, EAI_SYSTEM)
# may pass, so it must not disable a client's endpoint.
_NO_SUCH_NAME = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, name)
)


def check_destination(url: object, policy: WebhookPolicy) -> None:
    """Raise PermissionDenied if any address ``url`` resolves to is internal and not
    allow-listed; ValidationError, naming the problem, if ``parse_url`` refuses it, if it is
    plain ``http://`` where the policy takes ``https://`` only, or if its host name does not
    exist; Unavailable if the name cannot be resolved just now (try again later)."""
    scheme, host, port = parse_url(url)
    if policy.https_only and scheme != "https":
        raise ValidationError(f"{HTTPS_RULE}, not {url!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as e:
        raise ValidationError(f"webhook host {host!r} does not resolve: {e}") from None
    except socket.gaierror as e:
        if e.errno in _NO_SUCH_NAME:
            raise ValidationError(f"webhook host {host!r} does not resolve: {e}") from None
        raise Unavailable(f"webhook host {host!r} cannot be resolved just now: {e}") from None
    except OSError as e:  # a resolver's timeout, or another failure of the lookup itself
        raise Unavailable(f"webhook host {host!r} cannot be resolved just now: {e}") from None
    for info in infos:
        address, internal = _classified(str(info[4][0]))
        if internal and not policy.allow.allows(host, address):
            raise PermissionDenied(
                f"webhook URL {url!r} resolves to {address}, a private, loopback or link-local "
                f"address; only public endpoints are allowed (see {ALLOW_ENV})"
            )


class WebhookURL(NamedTuple):
    """Where a webhook URL sends: its scheme, host (lower case; an IPv6 address without its
    brackets) and port (the scheme's default when the URL names none)."""

    scheme: str
    host: str
    port: int


MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?", re.IGNORECASE)


def parse_url(url: object) -> WebhookURL:
    """Where ``url`` sends, or ValidationError naming what is wrong with it: not a string, empty,
    longer than ``MAX_URL_LENGTH``, whitespace or control characters, not ASCII, not an absolute
    lower-case ``http://`` or ``https://`` URL, credentials in it, no host, a host that is not
    a host name or a bracketed IPv6 address, a port that is not a number from 1 to 65535.

    Registration and every send use this one parse. It reads the authority itself rather than
    trusting ``urllib.parse``, which raises ValueError on some of these (``.port`` only when read)
    and reads others leniently (``http://[::1]]:80/`` as port 80 of ``::1``). What it accepts,
    ``urlsplit`` (the senders' parse) reads as the same scheme, host and port.
    """
    if not isinstance(url, str):
        raise ValidationError(f"webhook URL must be a string, not {type(url).__name__}")
    return _parse(url)


# Checked before every send: the parse is remembered, the name is resolved again each time.
@functools.lru_cache(maxsize=1024)
def _parse(url: str) -> WebhookURL:
    if not url:
        raise ValidationError("webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise LimitExceeded(
            f"webhook URL is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed"
        )
    for index, char in enumerate(url):
        if char.isspace() or not char.isprintable():
            raise _refused(url, f"whitespace or control character {char!r} at position {index}")
    if not url.isascii():
        raise _refused(
            url,
            "not ASCII: percent-encode other characters, and give a domain name in its xn-- form",
        )
    scheme, delimiter, rest = url.partition("://")
    if not delimiter or not scheme or "/" in scheme:
        raise _refused(url, "not an absolute http:// or https:// URL")
    if scheme.lower() != scheme:
        raise _refused(url, f"the scheme must be in lower case ({scheme.lower()}://)")
    if scheme not in DEFAULT_PORTS:
        raise _refused(url, f"the scheme must be http:// or https://, not {scheme}://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        # Not echoed: the refusal would carry the credentials into answers and logs.
        raise ValidationError(
            "webhook URL must not carry credentials (user:password@): they would be stored and "
            "logged with it; each delivery is signed with the endpoint's secret instead"
        )
    host, port = _authority(url, authority)
    return WebhookURL(scheme, host.lower(), DEFAULT_PORTS[scheme] if port is None else port)


def _authority(url: str, authority: str) -> tuple[str, int | None]:
    """The host and port (None: the scheme's default) of a URL's ``host[:port]``."""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _refused(url, "the IPv6 address has no closing ']'")
        host, after = authority[1:close], authority[close + 1 :]
        if not _ipv6(host):
            raise _refused(url, f"[{host}] is not an IPv6 address")
        if after and not after.startswith(":"):
            raise _refused(url, f"{after!r} after its IPv6 address, where only ':port' may follow")
        port = after[1:]
    else:
        host, _, port = authority.partition(":")
        if "[" in authority or "]" in authority:
            raise _refused(
                url, "brackets are only for an IPv6 address (as in http://[2001:db8::1]/)"
            )
        if ":" in port:
            raise _refused(url, "an IPv6 address must be in brackets (as in http://[2001:db8::1]/)")
        if not host:
            raise _refused(url, "no host")
        if (
            len(host) > 253
            or not _HOST_NAME.fullmatch(host)
            or any(len(label) > 63 for label in host.split("."))
        ):
            raise _refused(url, f"{host!r} is not a valid host name")
    if not port:
        return host, None  # "host:" names no port (RFC 3986): the scheme's default
    if not port.isdigit():
        raise _refused(url, f"port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise _refused(url, f"port {int(port)} is out of range (1-65535)")
    return host, int(port)


def _ipv6(text: str) -> bool:
    """Whether ``text`` is an IPv6 address (without a zone: ``%`` would reach the resolver)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return "%" not in text


def _refused(url: str, problem: str) -> ValidationError:
    shown = url if len(url) <= 200 else f"{url[:200]}..."
    return ValidationError(f"webhook URL {shown!r}: {problem}")


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
