"""A delivery on the gcp backend, end to end on Google's emulators: a client creates a shipment, a
dispatcher assigns its parcel, the driver sends it out and delivers it; the change reaches the
event publisher through the Eventarc bridge, ``ParcelDelivered`` reaches billing, notification
and the client's webhook through Google's Pub/Sub emulator, and the read models are read back from
Google's Firestore emulator with the official client. Pushes without a valid token are refused."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from google.cloud import firestore
from standardwebhooks.webhooks import Webhook

from meridian.app.clients import register_client
from meridian.gcp.firestore import FirestoreDocumentStore
from tests.e2e_gcp.conftest import (
    PROJECT,
    PUSH_IDENTITY,
    GcpPlatform,
    WebhookReceiver,
)
from tests.e2e_gcp.signing import LocalSigner

pytestmark = pytest.mark.e2e
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout_s: float = 45) -> T:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_delivery_reaches_billing_notification_and_the_clients_webhook(
    gcp_platform: GcpPlatform,
) -> None:
    platform = gcp_platform
    store = FirestoreDocumentStore(PROJECT)
    client_id = f"c-{os.urandom(4).hex()}"
    api_key = register_client(store, client_id, "Freshmart")
    store.close()
    signer = platform.signer
    dispatcher = {"Authorization": f"Bearer {signer.identity_token(PROJECT, 'dsp-1', 'dispatcher')}"}
    driver = {"Authorization": f"Bearer {signer.identity_token(PROJECT, 'drv-7', 'driver')}"}
    client = {"X-API-Key": api_key}
    command = httpx.Client(base_url=platform.url("command"), timeout=20)

    registered = command.post(
        f"/v1/clients/{client_id}/webhooks",
        json={"url": platform.webhook_url, "event_types": ["ParcelDelivered"]},
        headers=client,
    )
    assert registered.status_code == 201, registered.text
    secret = registered.json()["secret"]

    parcel, now = f"p-{os.urandom(4).hex()}", datetime.now(UTC)
    window = {"start": now.isoformat(), "end": (now + timedelta(hours=3)).isoformat()}
    shipment = {
        "parcels": [
            {
                "parcel_id": parcel,
                "recipient": {"name": "Asha", "phone": "+919812345678"},
                "stop": {"location": {"lat": 12.97, "lng": 77.59}, "address": "MG Road", "window": window},
                "weight_kg": 1.5,
            }
        ]
    }  # fmt: skip
    created = command.post("/v1/shipments", json=shipment, headers=client)
    assert created.status_code == 202, created.text
    assign = {"route_id": "r-1", "driver_id": "drv-7", "vehicle_id": "veh-3", "stop_sequence": 0}
    moved = command.post(f"/v1/parcels/{parcel}:assign", json=assign, headers=dispatcher)
    assert moved.status_code == 202, moved.text
    out = {"vehicle_id": "veh-3", "at": now.isoformat()}
    moved = command.post(f"/v1/parcels/{parcel}:out-for-delivery", json=out, headers=driver)
    assert moved.status_code == 202, moved.text
    delivered = {
        "vehicle_id": "veh-3",
        "delivered_at": datetime.now(UTC).isoformat(),
        "position": {"lat": 12.97, "lng": 77.59},
        "pod": {"signature_ref": f"sig-{parcel}"},
    }
    moved = command.post(f"/v1/parcels/{parcel}:deliver", json=delivered, headers=driver)
    assert moved.status_code == 202, moved.text

    def texts() -> list[str]:
        sent = httpx.get(f"{platform.url('sms-gateway')}/v1/messages", timeout=5).json()
        return [m["body"] for m in sent if parcel in m["body"]]

    def charges() -> list[dict[str, Any]]:
        charged = httpx.get(f"{platform.url('billing-api')}/v1/charges", timeout=5).json()
        return [c for c in charged if c["reference"] == parcel]

    def webhooks() -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in WebhookReceiver.received if parcel.encode() in b]

    eventually(lambda: any("was delivered" in t for t in texts()), "the delivered text")
    (charge,) = eventually(charges, "the charge at the billing API")
    assert charge["client_id"] == client_id
    (headers, body), *_ = eventually(webhooks, "the client's webhook")
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "ParcelDelivered" and event["data"]["parcel_id"] == parcel

    # The read models, read back from Google's Firestore emulator with its own client.
    db = firestore.Client(project=PROJECT)
    assert db.document(f"parcels/{parcel}").get().to_dict()["status"] == "DELIVERED"
    ledgers = [d.id for d in db.collection("processed_events").stream()]
    for consumer in ("billing", "notification"):
        assert any(d.startswith(f"{consumer}:") for d in ledgers), ledgers
    db.close()


@pytest.mark.parametrize("service", ["billing", "notification", "client-webhook"])
def test_a_push_without_a_token_or_for_another_account_is_refused(
    gcp_platform: GcpPlatform, service: str
) -> None:
    url = f"{gcp_platform.url(service)}/events"
    body = {
        "message": {"data": "", "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"},
        "subscription": f"projects/{PROJECT}/subscriptions/{service}",
    }
    assert httpx.post(url, json=body).status_code == 401

    def pushed_with(token: str) -> int:
        return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}).status_code

    stranger = f"someone@{PROJECT}.iam.gserviceaccount.com"
    assert pushed_with(gcp_platform.signer.oidc_token(url, stranger)) == 403
    # Signed by a key the certificates URL does not publish, or for another audience: 401.
    assert pushed_with(LocalSigner("forged").oidc_token(url, PUSH_IDENTITY)) == 401
    assert pushed_with(gcp_platform.signer.oidc_token(f"{url}/other", PUSH_IDENTITY)) == 401
