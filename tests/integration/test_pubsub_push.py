"""Push delivery (reference §3), the push token and its verification with the published keys,
and the BigQuery subscription into the embedded warehouse (reference §4)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest

from meridian.domain.errors import Unauthenticated
from meridian.embedded.oidc import PushTokenVerifier, TokenIssuer, load_jwks, verify_push_token
from meridian.embedded.pubsub import Broker, SubscriptionConfig
from meridian.embedded.pubsub.bigquery import BigQuerySink
from meridian.embedded.pubsub.push import PushDispatcher
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.gcp.pubsub import decode_push_request
from meridian.ports import Message

ENDPOINT = "http://127.0.0.1:9/events"
ACCOUNT = "eta-push@meridian-local.iam.gserviceaccount.com"


def _push_world(tmp_path: Path, statuses: list[int]) -> tuple[Broker, list[httpx.Request]]:
    broker = Broker(tmp_path)
    broker.create_topic("events")
    broker.create_topic("events.dlq")
    broker.create_subscription(
        SubscriptionConfig(
            "eta",
            "events",
            push_endpoint=ENDPOINT,
            push_service_account=ACCOUNT,
            dead_letter_topic="events.dlq",
            max_delivery_attempts=5,
        )
    )
    return broker, []


def _run_dispatcher(
    broker: Broker, tmp_path: Path, statuses: list[int], want_acks: int
) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses.pop(0) if statuses else 204)

    async def main() -> None:
        acked = 0
        done = asyncio.Event()

        def delivered(_: object) -> None:
            nonlocal acked
            acked += 1
            if acked >= want_acks:
                done.set()

        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        dispatcher = PushDispatcher(
            broker, TokenIssuer(tmp_path), client=client, on_delivered=delivered
        )
        task = asyncio.create_task(dispatcher.run(refresh_s=0.05))
        await asyncio.wait_for(done.wait(), 30)
        dispatcher.stop()
        await task
        await client.aclose()

    asyncio.run(main())
    return seen


def test_push_posts_the_wrapped_envelope_with_a_verifiable_token(tmp_path: Path) -> None:
    broker, _ = _push_world(tmp_path, [])
    (message_id,) = broker.publish(
        "events", [Message(b"\x01avro", {"eventType": "ParcelDelivered"}, "parcel-1")]
    )
    (request,) = _run_dispatcher(broker, tmp_path, [], want_acks=1)
    body = json.loads(request.content)
    assert body["subscription"] == "projects/meridian-local/subscriptions/eta"
    assert body["deliveryAttempt"] == 1
    message = body["message"]
    assert message["messageId"] == message["message_id"] == message_id
    assert base64.b64decode(message["data"]) == b"\x01avro"
    assert message["attributes"] == {"eventType": "ParcelDelivered"}
    assert message["orderingKey"] == "parcel-1"
    assert message["publishTime"].endswith("Z")

    token = request.headers["Authorization"].removeprefix("Bearer ")
    claims = verify_push_token(token, ENDPOINT, tmp_path)
    assert claims["email"] == ACCOUNT and claims["aud"] == ENDPOINT
    assert claims["exp"] > claims["iat"]
    with pytest.raises(Unauthenticated):
        verify_push_token(token, "http://127.0.0.1:9/other", tmp_path)

    verifier = PushTokenVerifier(load_jwks(tmp_path))
    decoded = decode_push_request(
        request.content,
        request.headers["Authorization"],
        ENDPOINT,
        verify=verifier.verify,
        expected_email=ACCOUNT,
    )
    assert decoded.message.message_id == message_id
    assert decoded.message.delivery_attempt == 1


def test_token_from_another_issuer_key_is_rejected(tmp_path: Path) -> None:
    foreign = TokenIssuer(tmp_path / "elsewhere").token(ENDPOINT, ACCOUNT)
    with pytest.raises(Unauthenticated, match="unknown key"):
        verify_push_token(foreign, ENDPOINT, tmp_path)


def test_non_success_status_is_a_nack_and_the_message_is_redelivered(tmp_path: Path) -> None:
    broker, _ = _push_world(tmp_path, [])
    broker.publish("events", [Message(b"x")])
    seen = _run_dispatcher(broker, tmp_path, [500, 429], want_acks=1)
    attempts = [json.loads(r.content)["deliveryAttempt"] for r in seen]
    assert attempts == [1, 2, 3]
    assert broker.metrics("eta").backlog == 0


def test_bigquery_subscription_writes_rows_with_metadata(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("telemetry")
    broker.create_subscription(
        SubscriptionConfig(
            "archive",
            "telemetry",
            bigquery_table="telemetry.raw_pings",
            bigquery_write_metadata=True,
        )
    )
    ids = broker.publish("telemetry", [Message(b"p1", {"vehicleId": "v1"}), Message(b"p2")])
    warehouse = EmbeddedWarehouse(tmp_path)
    assert BigQuerySink(broker, warehouse).drain_once() == 2
    rows = EmbeddedWarehouse(tmp_path).query(
        "SELECT subscription_name, message_id, attributes, data, publish_time"
        " FROM telemetry.raw_pings ORDER BY message_id"
    )
    assert [r["message_id"] for r in rows] == ids
    assert rows[0]["subscription_name"] == "archive"
    assert json.loads(rows[0]["attributes"]) == {"vehicleId": "v1"}
    assert rows[1]["data"] == b"p2"
    assert broker.metrics("archive").backlog == 0
