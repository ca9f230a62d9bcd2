"""The shared push endpoint: token checks, undecodable messages never acked, 204 only when done."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain import events as ev
from meridian.domain.errors import Unauthenticated, Unavailable
from meridian.edge.push import reactor_app
from meridian.edge.push_auth import RememberedTokens, VerifiedPush
from meridian.embedded.oidc import PushTokenVerifier, TokenIssuer, load_jwks
from meridian.embedded.pubsub.push import envelope
from meridian.ports import Message, PushAuthenticator, ReceivedMessage

URL = "http://127.0.0.1:9999"
SA = Settings(project="meridian-local").push_identity
CODEC = EventCodec(load_catalog())
EVENT = ev.ShipmentCreated(
    event_id="evt-1",
    occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    shipment_id="s-1",
    client_id="c-1",
    parcel_ids=("p",),
)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[TestClient, TokenIssuer, list[Any]]:
    issuer = TokenIssuer(tmp_path)
    seen: list[Any] = []

    def handle(event: ev.DomainEvent) -> None:
        if event.event_id == "evt-flaky":
            raise Unavailable("downstream down")
        seen.append(event)

    auth = VerifiedPush(PushTokenVerifier(load_jwks(tmp_path)), frozenset({SA}))
    return TestClient(reactor_app("test", handle, auth, CODEC, URL)), issuer, seen


def _body(message: Message) -> str:
    received = ReceivedMessage("ack", "m-1", message, datetime.now(UTC), 1)
    return json.dumps(envelope(received, "sub", "meridian-local", True))


def _post(client: TestClient, body: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/events", content=body, headers=headers).status_code


def test_a_verified_push_is_handled_and_acked_with_204(
    setup: tuple[TestClient, TokenIssuer, list[Any]],
) -> None:
    client, issuer, seen = setup
    assert _post(client, _body(CODEC.to_message(EVENT)), issuer.token(f"{URL}/events", SA)) == 204
    assert seen == [EVENT]


def test_push_without_a_token_is_401_and_with_a_forged_or_foreign_one_401_or_403(
    setup: tuple[TestClient, TokenIssuer, list[Any]], tmp_path: Path
) -> None:
    client, issuer, seen = setup
    body = _body(CODEC.to_message(EVENT))
    assert _post(client, body, None) == 401
    forged = TokenIssuer(tmp_path / "elsewhere").token(f"{URL}/events", SA)  # another key
    assert _post(client, body, forged) == 401
    assert _post(client, body, issuer.token("http://other/events", SA)) == 401  # wrong audience
    assert (
        _post(client, body, issuer.token(f"{URL}/events", "intruder@x.iam.gserviceaccount.com"))
        == 403
    )
    assert seen == []


def test_undecodable_messages_are_nacked_so_they_end_up_dead_lettered(
    setup: tuple[TestClient, TokenIssuer, list[Any]],
) -> None:
    client, issuer, seen = setup
    token = issuer.token(f"{URL}/events", SA)
    good = CODEC.to_message(EVENT)
    assert _post(client, _body(Message(b"\x00garbage", good.attributes)), token) == 400
    assert (
        _post(client, _body(Message(good.data, {**good.attributes, "eventType": "Nope"})), token)
        == 400
    )
    assert _post(client, "{not json", token) == 400
    assert seen == []


def test_a_failing_handler_answers_non_2xx_so_pubsub_retries(
    setup: tuple[TestClient, TokenIssuer, list[Any]],
) -> None:
    client, issuer, _ = setup
    flaky = CODEC.to_message(EVENT.model_copy(update={"event_id": "evt-flaky"}))
    assert _post(client, _body(flaky), issuer.token(f"{URL}/events", SA)) == 503


def test_a_remembered_token_is_accepted_until_it_expires_and_a_forged_one_never(
    tmp_path: Path,
) -> None:
    now = [time.time()]
    verifier = VerifiedPush(PushTokenVerifier(load_jwks(tmp_path)), frozenset({SA}))
    checks: list[str] = []

    class Counting(PushAuthenticator):
        def check(self, authorization: str | None, audience: str) -> None:
            checks.append(audience)
            verifier.check(authorization, audience)

    auth = RememberedTokens(Counting(), clock=lambda: now[0])
    token = f"Bearer {TokenIssuer(tmp_path).token(f'{URL}/events', SA)}"
    for _ in range(3):
        auth.check(token, f"{URL}/events")
    assert len(checks) == 1  # verified once, then remembered
    with pytest.raises(Unauthenticated):
        auth.check(token, "http://other/events")  # another audience is checked, and refused
    forged = f"Bearer {TokenIssuer(tmp_path / 'elsewhere').token(f'{URL}/events', SA)}"
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            auth.check(forged, f"{URL}/events")
    assert len(checks) == 4  # a refused token is never remembered
    now[0] += 2 * 3600  # past the token's expiry: verified again
    auth.check(token, f"{URL}/events")
    assert len(checks) == 5


def test_while_no_span_is_exported_the_handler_runs_in_a_child_of_the_message_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import trace

    from meridian.observability import RecordWhenExported, configure_tracing

    sampler = configure_tracing("test").sampler  # as the service's serve() configures it
    assert isinstance(sampler, RecordWhenExported)
    monkeypatch.setattr(sampler, "exporting", False)
    issuer = TokenIssuer(tmp_path)
    auth = VerifiedPush(PushTokenVerifier(load_jwks(tmp_path)), frozenset({SA}))
    spans: list[trace.SpanContext] = []

    def handle(_: ev.DomainEvent) -> None:
        spans.append(trace.get_current_span().get_span_context())

    client = TestClient(reactor_app("test", handle, auth, CODEC, URL))
    token = issuer.token(f"{URL}/events", SA)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = CODEC.to_message(EVENT)
    traced = Message(message.data, {**message.attributes, "traceparent": parent})
    assert _post(client, _body(traced), token) == 204
    assert _post(client, _body(message), token) == 204
    continued, fresh = spans
    assert f"{continued.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert continued.span_id not in (0, 0xB7AD6B7169203331)
    assert fresh.is_valid and fresh.trace_id != continued.trace_id
