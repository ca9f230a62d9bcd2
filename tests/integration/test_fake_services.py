"""The embedded SMS gateway and billing API: validation, idempotency keys, injected failures."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from meridian.embedded.external import billing_api, sms_gateway
from meridian.embedded.external.fake_service import FaultConfig


def test_the_sms_gateway_sends_once_per_key_and_records_what_it_sent(tmp_path: Path) -> None:
    client = TestClient(sms_gateway.create_app(tmp_path))
    message = {"to": "+4915112345678", "body": "Your parcel was delivered."}
    first = client.post("/v1/messages", json=message, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/messages", json=message, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {"message_id": first.json()["message_id"], "duplicate": True}
    sent = client.get("/v1/messages").json()
    assert [(m["idempotency_key"], m["to"], m["body"]) for m in sent] == [
        ("k1", message["to"], message["body"])
    ]


def test_the_sms_gateway_refuses_bad_requests_with_every_field_error(tmp_path: Path) -> None:
    client = TestClient(sms_gateway.create_app(tmp_path))
    refused = client.post("/v1/messages", json={"to": "1", "body": ""})
    assert refused.status_code == 422
    locations = {e["location"] for e in refused.json()["errors"]}
    assert locations == {"header.idempotency-key", "body.to", "body.body"}
    assert (
        client.post("/v1/messages", content=b"{", headers={"Idempotency-Key": "k"}).status_code
        == 422
    )
    assert client.get("/v1/messages").json() == []


def test_injected_failures_answer_503_and_record_nothing(tmp_path: Path) -> None:
    client = TestClient(billing_api.create_app(tmp_path, FaultConfig(failure_rate=1.0)))
    charge = {"client_id": "c1", "reference": "p1", "amount_minor": 450, "currency": "EUR"}
    assert (
        client.post("/v1/charges", json=charge, headers={"Idempotency-Key": "k"}).status_code == 503
    )
    client.put("/v1/config", json={"latency_s": 0, "failure_rate": 0})
    first = client.post("/v1/charges", json=charge, headers={"Idempotency-Key": "k"})
    again = client.post("/v1/charges", json=charge, headers={"Idempotency-Key": "k"})
    assert first.status_code == 201
    assert (again.status_code, again.json()["charge_id"]) == (409, first.json()["charge_id"])
    assert len(client.get("/v1/charges").json()) == 1
