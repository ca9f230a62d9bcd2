"""``http.*`` call steps over an injectable transport, with Workflows' request encoding, response
decoding and error tags (reference §6.4, §6.7)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from .errors import WorkflowError, builtin, type_error, value_error
from .expressions import is_number, type_name

DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 1800.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class TransportError(Exception):
    """A failed exchange; ``tag`` is ConnectionFailedError (never connected), ConnectionError
    (broken during transfer) or TimeoutError."""

    def __init__(self, tag: str, message: str) -> None:
        super().__init__(message)
        self.tag = tag


class HttpTransport(Protocol):
    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse: ...


class HttpxTransport:
    """The real transport. One client per event loop, created on first use."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def warm(self) -> httpx.AsyncClient:
        """Build the client now (its TLS context takes a noticeable fraction of a second), so the
        first step of the first execution does not wait for it. Call on the loop that sends."""
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        client = self.warm()
        try:
            response = await client.request(
                method, url, headers=headers, content=body, timeout=timeout
            )
        except httpx.TimeoutException as e:
            raise TransportError("TimeoutError", f"{method} {url}: timed out") from e
        except httpx.ConnectError as e:
            raise TransportError("ConnectionFailedError", f"{method} {url}: {e}") from e
        except httpx.TransportError as e:
            raise TransportError("ConnectionError", f"{method} {url}: {e}") from e
        return HttpResponse(response.status_code, dict(response.headers), response.content)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if content_type is not None and isinstance(body, str) and "json" not in content_type:
        return body.encode()
    if content_type is None:
        headers["Content-Type"] = "application/json"
    return json.dumps(body, separators=(",", ":")).encode()


def _decode_body(response: HttpResponse) -> Any:
    content_type = next(
        (v for k, v in response.headers.items() if k.lower() == "content-type"), ""
    ).lower()
    if not response.body:
        return None if "json" in content_type else ""
    if "json" in content_type:
        try:
            return json.loads(response.body)
        except ValueError:
            return response.body.decode(errors="replace")
    if content_type.startswith("text/") or not content_type:
        try:
            return response.body.decode()
        except UnicodeDecodeError:
            return response.body
    return response.body


def _url(args: dict[str, Any]) -> str:
    url = args.get("url")
    if not isinstance(url, str) or not url:
        raise type_error(f"http: url must be a string, got {type_name(url)}")
    query = args.get("query")
    if query is None:
        return url
    if not isinstance(query, dict):
        raise type_error("http: query must be a map")
    pairs = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, item if isinstance(item, str) else json.dumps(item)))
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{urllib.parse.urlencode(pairs)}"


# An OIDC token for an audience, signed as the workflow's identity.
OidcToken = Callable[[str], str]


async def http_call(
    function: str,
    args: dict[str, Any],
    transport: HttpTransport,
    oidc_token: OidcToken | None = None,
) -> dict[str, Any]:
    """Run ``http.get``/``post``/…/``request``; returns ``{code, headers, body}`` or raises the
    Workflows error. ``auth: {type: OIDC}`` sends ``oidc_token``'s token for ``auth.audience``,
    by default the URL without its query, as Cloud Workflows does; without ``oidc_token`` (an
    engine given none) the call goes unsigned."""
    method = (
        str(args.get("method", "")).upper() if function == "http.request" else function[5:].upper()
    )
    if not method:
        raise value_error("http.request needs a method")
    timeout = args.get("timeout", DEFAULT_TIMEOUT)
    if not is_number(timeout) or timeout <= 0:
        raise type_error("http: timeout must be a positive number of seconds")
    if timeout > MAX_TIMEOUT:
        raise value_error(f"http: timeout above {MAX_TIMEOUT:.0f} s")
    raw_headers = args.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise type_error("http: headers must be a map")
    headers = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_headers.items()}
    body = _encode_body(args.get("body"), headers)
    url = _url(args)
    auth = args.get("auth")
    if oidc_token is not None and isinstance(auth, dict) and auth.get("type") == "OIDC":
        audience = auth.get("audience") or url.partition("?")[0]
        headers["Authorization"] = f"Bearer {oidc_token(str(audience))}"
    try:
        response = await transport.send(method, url, headers, body, float(timeout))
    except TransportError as e:
        raise builtin(e.tag, str(e)) from e
    decoded = _decode_body(response)
    if response.status >= 400:
        raise WorkflowError(
            {
                "message": f"HTTP server responded with error code {response.status}",
                "code": response.status,
                "headers": response.headers,
                "body": decoded,
                "tags": ["HttpError"],
            }
        )
    return {"code": response.status, "headers": response.headers, "body": decoded}
