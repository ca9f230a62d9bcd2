"""The six reactors over real processes: command → event publisher → push → reactors → effects,
plus redelivery, token checks, dead letters and their replay, and a slow then failing SMS gateway."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from meridian.app.clients import register_client
from meridian.app.idempotency import event_ledger_path
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain import events as ev
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy, SubscriptionConfig
from meridian.runtime.platform import prepare_data_dir
from tests.e2e.conftest import MERIDIAN, ROOT, Runtime, eventually, free_port_block

pytestmark = pytest.mark.e2e
REACTORS = ("eta", "notification", "billing", "pod", "client-webhook", "driver-scoring")
NOW = datetime.now(UTC)


class Receiver(BaseHTTPRequestHandler):
    """A client's webhook endpoint: 500 on the first try of each webhook-id, then 200."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        first = all(h["webhook-id"] != self.headers["webhook-id"] for h, _ in self.received)
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(500 if first else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


MODULES = {
    "platform": "meridian.runtime.platform",
    "sms-gateway": "meridian.embedded.external.sms_gateway",
    "billing-api": "meridian.embedded.external.billing_api",
    "command": "services.command.app",
    "event-publisher": "services.event_publisher.app",
    "eta": "services.reactors.eta.app",
    "notification": "services.reactors.notification.app",
    "billing": "services.reactors.billing.app",
    "pod": "services.reactors.pod.app",
    "client-webhook": "services.reactors.webhook.app",
    "driver-scoring": "services.reactors.driver_scoring.app",
}


def start_services(
    env: dict[str, str], data_dir: Path
) -> tuple[Runtime, list[subprocess.Popen[bytes]]]:
    """The platform and the services the reactors need, each its own process as `meridian up`
    runs them (only these, and with a start-up allowance for a loaded 2-core machine)."""
    settings = Settings(data_dir=data_dir, base_port=int(env["MERIDIAN_BASE_PORT"]))
    prepare_data_dir(load_catalog(), settings)
    processes = []
    for name, module in MODULES.items():
        child_env = {
            **env,
            "PORT": str(settings.port_of(name)),
            "MERIDIAN_SERVICE": name,
            "PYTHONPATH": str(ROOT),
        }
        log = (data_dir / f"{name}.log").open("ab")
        argv = [sys.executable, "-m", module]
        processes.append(subprocess.Popen(argv, env=child_env, cwd=ROOT, stdout=log, stderr=log))
    runtime = Runtime(processes[0], data_dir, settings.base_port)  # type: ignore[arg-type]
    deadline = time.monotonic() + 150
    for name in MODULES:
        while True:
            try:
                httpx.get(f"{runtime.url(name)}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    stop_services(processes)
                    raise RuntimeError(f"{name} did not start; see {data_dir}/{name}.log") from None
                time.sleep(0.2)
    return runtime, processes


def stop_services(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    data_dir = tmp_path_factory.mktemp("reactors")
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_BASE_PORT": str(free_port_block(24)),
        "MERIDIAN_EVENTARC_MIN_BACKOFF": "0.5",
        "MERIDIAN_EVENTARC_MAX_BACKOFF": "2",
        "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "MERIDIAN_LOG_LEVEL": "WARNING",
        "MERIDIAN_SLA_TICK_S": "1",  # the scheduler's SLA check, every second here
    }
    runtime, processes = start_services(env, data_dir)
    broker = Broker(data_dir)
    for name in REACTORS:  # Pub/Sub retries from 10 s up; shorter here so tests see retries quickly
        config = broker.get_subscription(name)
        broker.update_subscription(dataclasses.replace(config, retry=RetryPolicy(0.5, 2.0)))
    broker.create_subscription(SubscriptionConfig(name="e2e-audit", topic="logistics.events"))
    yield runtime
    stop_services(processes)


@dataclasses.dataclass
class Client:
    client_id: str
    api_key: str
    driver: dict[str, str]
    dispatcher: dict[str, str]


def _client(runtime: Runtime, tariff: bool = True) -> Client:
    store = all_stores(runtime.data_dir)
    client_id = f"c-{os.urandom(4).hex()}"
    key = register_client(store, client_id, "Freshmart")
    if not tariff:  # a client onboarded without a price: billing must not guess one
        store.delete(f"billing_tariffs/{client_id}")
    issuer = LocalIdentityIssuer(runtime.data_dir)
    return Client(
        client_id,
        key,
        {"Authorization": f"Bearer {issuer.token('drv-7', 'driver')}"},
        {"Authorization": f"Bearer {issuer.token('dsp-1', 'dispatcher')}"},
    )


def stop_location(i: int) -> dict[str, float]:
    """Where the ``i``-th stop of a route sent out by ``_send_out`` is: 1.1 km apart, due north."""
    return {"lat": 12.97 + i / 100, "lng": 77.59}


def _send_out(
    runtime: Runtime, client: Client, count: int, route: str, window_end: datetime | None = None
) -> list[str]:
    command = runtime.url("command")
    parcels = [f"p-{os.urandom(4).hex()}" for _ in range(count)]
    end = window_end or NOW + timedelta(hours=3)
    window = {"start": NOW.isoformat(), "end": end.isoformat()}
    body = {
        "parcels": [
            {
                "parcel_id": p,
                "recipient": {"name": "Asha", "phone": "+919812345678"},
                "stop": {
                    "location": stop_location(i),
                    "address": "MG Road",
                    "window": window,
                },
                "weight_kg": 1.5,
            }
            for i, p in enumerate(parcels)
        ]
    }
    with httpx.Client(base_url=command, timeout=10) as http:
        assert (
            http.post("/v1/shipments", json=body, headers={"X-API-Key": client.api_key}).status_code
            == 202
        )
        for i, p in enumerate(parcels):
            assign = {
                "route_id": route,
                "driver_id": "drv-7",
                "vehicle_id": "veh-3",
                "stop_sequence": i,
            }
            assert (
                http.post(
                    f"/v1/parcels/{p}:assign", json=assign, headers=client.dispatcher
                ).status_code
                == 202
            )
            out = {"vehicle_id": "veh-3", "at": NOW.isoformat()}
            assert (
                http.post(
                    f"/v1/parcels/{p}:out-for-delivery", json=out, headers=client.driver
                ).status_code
                == 202
            )
    return parcels


def _deliver(http: httpx.Client, client: Client, parcel: str) -> float:
    body = {
        "vehicle_id": "veh-3",
        "delivered_at": datetime.now(UTC).isoformat(),
        "position": {"lat": 12.97, "lng": 77.59},
        "pod": {"signature_ref": f"sig-{parcel}"},
    }
    started = time.perf_counter()
    response = http.post(f"/v1/parcels/{parcel}:deliver", json=body, headers=client.driver)
    assert response.status_code == 202, response.text
    return time.perf_counter() - started


def _sms(runtime: Runtime, parcel: str) -> list[str]:
    sent = httpx.get(f"{runtime.url('sms-gateway')}/v1/messages", timeout=5).json()
    return [m["body"] for m in sent if parcel in m["body"]]


def _charges(runtime: Runtime, parcel: str) -> list[dict[str, Any]]:
    charges = httpx.get(f"{runtime.url('billing-api')}/v1/charges", timeout=5).json()
    return [c for c in charges if c["reference"] == parcel]


def test_a_delivery_reaches_all_six_reactors_once_even_when_redelivered(runtime: Runtime) -> None:
    client = _client(runtime)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    command = httpx.Client(base_url=runtime.url("command"), timeout=10)
    hook_url = f"http://127.0.0.1:{server.server_port}/hooks"
    registered = command.post(
        f"/v1/clients/{client.client_id}/webhooks",
        json={"url": hook_url, "event_types": ["ParcelDelivered"]},
        headers={"X-API-Key": client.api_key},
    )
    assert registered.status_code == 201, registered.text
    secret = registered.json()["secret"]
    refused = command.post(
        f"/v1/clients/{client.client_id}/webhooks",
        json={"url": "http://169.254.169.254/latest/meta-data"},
        headers={"X-API-Key": client.api_key},
    )
    assert refused.status_code == 403

    (parcel,) = _send_out(runtime, client, 1, f"r-{os.urandom(3).hex()}")
    eventually(lambda: _sms(runtime, parcel), what="out-for-delivery SMS")
    eta = eventually(
        lambda: command.get(f"/v1/parcels/{parcel}", headers=client.driver).json().get("eta"),
        what="eta",
    )
    assert datetime.fromisoformat(eta) > NOW
    _deliver(command, client, parcel)

    def done() -> dict[str, Any] | None:
        status = command.get(f"/v1/parcels/{parcel}", headers=client.driver).json()
        return status if status.get("sla") == "met" and status.get("pod_complete") else None

    eventually(done, what="parcel status with SLA met and POD complete")
    eventually(lambda: len(_sms(runtime, parcel)) == 2, what="delivered SMS")
    eventually(lambda: _charges(runtime, parcel), what="charge")
    store = all_stores(runtime.data_dir)
    eventually(lambda: store.get("driver_scores/drv-7"), what="driver score")
    eventually(lambda: len(Receiver.received) >= 2, what="webhook retried after a 500")
    (first_headers, body), (second_headers, _) = Receiver.received[:2]
    assert first_headers["webhook-id"] == second_headers["webhook-id"]
    assert Webhook(secret).verify(body, first_headers)["data"]["parcel_id"] == parcel

    # The same ParcelDelivered pushed again (a redelivery): no second SMS, charge or webhook.
    broker = Broker(runtime.data_dir)
    audit = eventually(lambda: broker.pull("e2e-audit", 1000), what="audit")
    (again,) = [
        m.message
        for m in audit
        if m.message.attributes.get("eventType") == "ParcelDelivered"
        and m.message.attributes.get("subject") == parcel
    ]
    broker.publish("logistics.events", [again])
    processed = f"processed_events/notification:{again.attributes['eventId']}"
    time.sleep(2.5)
    assert store.get(processed) is not None
    assert len(_sms(runtime, parcel)) == 2 and len(_charges(runtime, parcel)) == 1
    assert (
        len([h for h, _ in Receiver.received if h["webhook-id"] == again.attributes["eventId"]])
        == 2
    )
    server.shutdown()


def test_push_without_or_with_a_forged_token_is_refused(runtime: Runtime, tmp_path: Path) -> None:
    forged = TokenIssuer(tmp_path).token  # a key nobody trusts
    real = TokenIssuer(runtime.data_dir).token
    for name in REACTORS:
        url = f"{runtime.url(name)}/events"
        body = {
            "message": {"data": "", "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"},
            "subscription": "x",
        }
        assert httpx.post(url, json=body).status_code == 401
        sa = Settings(project="meridian-local").push_identity
        assert (
            httpx.post(
                url, json=body, headers={"Authorization": f"Bearer {forged(url, sa)}"}
            ).status_code
            == 401
        )
        stranger = real(url, "someone@meridian-local.iam.gserviceaccount.com")
        assert (
            httpx.post(url, json=body, headers={"Authorization": f"Bearer {stranger}"}).status_code
            == 403
        )


def test_a_poison_event_is_dead_lettered_and_after_the_fix_replayed_exactly_once(
    runtime: Runtime,
) -> None:
    codec = EventCodec(load_catalog())
    broker = Broker(runtime.data_dir)
    billed, unbilled = _client(runtime), _client(runtime, tariff=False)

    def delivered(client: Client) -> ev.ParcelDelivered:
        parcel = f"p-{os.urandom(4).hex()}"
        return ev.ParcelDelivered(
            event_id=f"evt-{parcel}", occurred_at=NOW, parcel_id=parcel, shipment_id="s", client_id=client.client_id,
            driver_id="drv-9", vehicle_id="veh-9", delivered_at=NOW, lat=1, lng=1, window_end=NOW,
            recipient_phone="+919800000009",
        )  # fmt: skip

    poison, fine = delivered(unbilled), delivered(billed)
    broker.publish("logistics.events", [codec.to_message(poison), codec.to_message(fine)])
    eventually(lambda: _charges(runtime, fine.parcel_id), what="the healthy event's charge")

    def dead_lettered() -> bool:
        return broker.metrics("billing").dead_letter_depth >= 1

    eventually(dead_lettered, timeout_s=30, what="the poison event in the dead-letter topic")
    assert _charges(runtime, poison.parcel_id) == []
    # The fix: the client gets a tariff. The operator replays billing's dead letters.
    all_stores(runtime.data_dir).set(
        f"billing_tariffs/{unbilled.client_id}", {"per_delivery_minor": 3000, "currency": "INR"}
    )
    replay = subprocess.run(
        [
            *MERIDIAN,
            "replay-dead-letters",
            "--source",
            "billing",
            "--data-dir",
            str(runtime.data_dir),
        ],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 dead letters of billing (from billing-dead-letters" in replay.stdout
    eventually(lambda: _charges(runtime, poison.parcel_id), what="the replayed charge")
    time.sleep(1.5)
    assert len(_charges(runtime, poison.parcel_id)) == 1
    assert len(_sms(runtime, poison.parcel_id)) == 1  # the other reactors deduplicated the replay


def test_a_slow_then_failing_sms_gateway_does_not_slow_deliveries_and_nothing_is_lost(
    runtime: Runtime,
) -> None:
    client = _client(runtime)
    parcels = _send_out(runtime, client, 40, f"r-{os.urandom(3).hex()}")
    eventually(
        lambda: all(_sms(runtime, p) for p in parcels), timeout_s=30, what="out-for-delivery SMS"
    )
    gateway = httpx.Client(base_url=runtime.url("sms-gateway"), timeout=5)
    command = httpx.Client(base_url=runtime.url("command"), timeout=10)
    before = [_deliver(command, client, p) for p in parcels[:20]]
    assert gateway.put("/v1/config", json={"latency_s": 6, "failure_rate": 0}).status_code == 200
    during = [_deliver(command, client, p) for p in parcels[20:]]
    time.sleep(3)
    gateway.put("/v1/config", json={"latency_s": 0, "failure_rate": 1})
    time.sleep(3)
    gateway.put("/v1/config", json={"latency_s": 0, "failure_rate": 0})
    p99 = {
        k: statistics.quantiles(v, n=100)[98] for k, v in (("before", before), ("during", during))
    }
    # No delivery waits for the 6 s gateway (even the slowest is far below it on a busy 2-core
    # machine), and the typical delivery is as fast as before the gateway slowed down.
    assert max(during) < 2.0, p99
    assert statistics.median(during) < max(3 * statistics.median(before), 0.1), (before, during)

    def delivered_sms(parcel: str) -> int:
        return sum("was delivered" in body for body in _sms(runtime, parcel))

    eventually(
        lambda: all(delivered_sms(p) for p in parcels), timeout_s=45, what="notifications drained"
    )
    time.sleep(1)
    assert all(delivered_sms(p) == 1 for p in parcels)  # nothing sent twice
    print(json.dumps({k: round(v * 1000, 1) for k, v in p99.items()}))


def test_a_pod_photo_upload_completes_the_pod_record_with_the_stored_photo(
    runtime: Runtime,
) -> None:
    client = _client(runtime)
    (parcel,) = _send_out(runtime, client, 1, f"r-{os.urandom(3).hex()}")
    command = httpx.Client(base_url=runtime.url("command"), timeout=10)
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(2048)
    early = command.put(
        f"/v1/parcels/{parcel}/pod-image",
        content=jpeg,
        headers={**client.driver, "Content-Type": "image/jpeg"},
    )
    assert early.status_code == 409  # not delivered yet
    _deliver(command, client, parcel)
    uploaded = command.put(
        f"/v1/parcels/{parcel}/pod-image",
        content=jpeg,
        headers={**client.driver, "Content-Type": "image/jpeg"},
    )
    assert uploaded.status_code == 202, uploaded.text
    photo = uploaded.json()["photo_ref"]
    store = all_stores(runtime.data_dir)

    def finalised() -> dict[str, Any] | None:
        record = store.get(f"pod_records/{parcel}")
        return dict(record.data) if record and record.data.get("photo_ref") == photo else None

    record = eventually(finalised, what="POD record with the uploaded photo")
    assert record["complete"] and record["signature_ref"] == f"sig-{parcel}"
    assert record["photo_content_type"] == "image/jpeg" and record["photo_size_bytes"] == len(jpeg)
    assert Path(photo.removeprefix("file://")).read_bytes() == jpeg
    status = command.get(f"/v1/parcels/{parcel}", headers=client.driver).json()
    assert status["pod_complete"] is True


def test_a_window_that_closes_with_no_route_event_is_announced_breached_once(
    runtime: Runtime,
) -> None:
    client = _client(runtime)
    closes = datetime.now(UTC) + timedelta(seconds=4)
    (parcel,) = _send_out(runtime, client, 1, f"r-{os.urandom(3).hex()}", window_end=closes)
    store = all_stores(runtime.data_dir)

    def breached() -> bool:
        status = store.get(f"parcel_status/{parcel}")
        return bool(status and status.data.get("sla") == "breached")

    eventually(breached, timeout_s=30, what="the SLA tick to mark the parcel breached")
    time.sleep(3)  # a few more ticks: still one announcement
    broker = Broker(runtime.data_dir)
    codec = EventCodec(load_catalog())
    announced: set[str] = set()
    while batch := broker.pull("e2e-audit", 1000):
        for received in batch:
            attributes = received.message.attributes
            if attributes.get("eventType") == "SlaBreached":
                event = codec.from_message(received.message.data, attributes)
                if getattr(event, "parcel_id", None) == parcel:
                    announced.add(event.event_id)
        broker.acknowledge("e2e-audit", [r.ack_id for r in batch])
    assert len(announced) == 1, announced
    (event_id,) = announced
    # Announced to the client-visible side too: the webhook reactor processed it.
    eventually(
        lambda: store.get(event_ledger_path("client-webhook", event_id)), what="webhook reactor"
    )
