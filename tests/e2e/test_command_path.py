"""The accept-fast command path over real processes: command service → document store →
Eventarc emulation → event publisher → logistics.events; and telemetry, command service →
vehicle.telemetry, judged ping by ping."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from meridian.app.clients import register_client
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from tests.e2e.conftest import Runtime, free_port_block, listening_pids, start_runtime, stop_runtime

pytestmark = pytest.mark.e2e
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    data_dir = tmp_path_factory.mktemp("command-path")
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_BASE_PORT": str(free_port_block()),
        # Eventarc retries from 10 s up; shorter here so a restarted publisher is reached quickly.
        "MERIDIAN_EVENTARC_MIN_BACKOFF": "0.5",
        "MERIDIAN_EVENTARC_MAX_BACKOFF": "2",
    }
    runtime = start_runtime(env, ("platform", "command", "event-publisher"))
    Broker(data_dir).create_subscription(
        SubscriptionConfig(name="e2e-audit", topic="logistics.events")
    )
    yield runtime
    stop_runtime(runtime)


def _headers(data_dir: Path) -> dict[str, dict[str, str]]:
    issuer = LocalIdentityIssuer(data_dir)
    key = register_client(all_stores(data_dir), f"c-{os.urandom(4).hex()}", "Freshmart")
    return {
        "client": {"X-API-Key": key},
        "driver": {"Authorization": f"Bearer {issuer.token('drv-7', 'driver')}"},
        "dispatcher": {"Authorization": f"Bearer {issuer.token('dsp-1', 'dispatcher')}"},
    }


def _parcel(parcel_id: str) -> dict[str, Any]:
    window = {"start": NOW.isoformat(), "end": (NOW + timedelta(hours=2)).isoformat()}
    return {
        "parcel_id": parcel_id,
        "recipient": {"name": "Asha", "phone": "+919812345678"},
        "stop": {
            "location": {"lat": 12.97, "lng": 77.59},
            "address": "1 MG Road",
            "window": window,
        },
        "weight_kg": 1.5,
    }


def _events(
    broker: Broker, seen: list[tuple[str, str]], until: float, wanted: tuple[str, str] | None
) -> None:
    """Pull the audit subscription into ``seen`` until ``until`` or until ``wanted`` shows up."""
    while time.monotonic() < until:
        batch = broker.pull("e2e-audit", 100)
        broker.acknowledge("e2e-audit", [m.ack_id for m in batch])
        seen += [
            (m.message.attributes["eventType"], m.message.attributes["subject"]) for m in batch
        ]
        if wanted in seen:
            return
        if not batch:
            time.sleep(0.1)


def test_a_retried_delivery_is_one_event_and_survives_a_publisher_crash(runtime: Runtime) -> None:
    command = runtime.url("command")
    headers = _headers(runtime.data_dir)
    suffix = os.urandom(3).hex()
    p1, p2 = f"p-{suffix}-1", f"p-{suffix}-2"
    created = httpx.post(
        f"{command}/v1/shipments",
        json={"parcels": [_parcel(p1), _parcel(p2)]},
        headers=headers["client"],
    )
    assert created.status_code == 202, created.text
    for parcel_id in (p1, p2):
        assign = {"route_id": "r-1", "driver_id": "drv-7", "vehicle_id": "veh-3"}
        assert (
            httpx.post(
                f"{command}/v1/parcels/{parcel_id}:assign",
                json=assign,
                headers=headers["dispatcher"],
            ).status_code
            == 202
        )
        out = {"vehicle_id": "veh-3", "at": NOW.isoformat()}
        assert (
            httpx.post(
                f"{command}/v1/parcels/{parcel_id}:out-for-delivery",
                json=out,
                headers=headers["driver"],
            ).status_code
            == 202
        )

    deliver = {
        "vehicle_id": "veh-3",
        "delivered_at": NOW.isoformat(),
        "position": {"lat": 12.97, "lng": 77.59},
    }
    with_key = {**headers["driver"], "Idempotency-Key": f"deliver-{p1}"}
    first = httpx.post(f"{command}/v1/parcels/{p1}:deliver", json=deliver, headers=with_key)
    second = httpx.post(f"{command}/v1/parcels/{p1}:deliver", json=deliver, headers=with_key)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()

    broker = Broker(runtime.data_dir)
    seen: list[tuple[str, str]] = []
    _events(broker, seen, time.monotonic() + 20, ("ParcelDelivered", p1))
    _events(broker, seen, time.monotonic() + 1.5, None)  # give a duplicate time to show up
    assert seen.count(("ParcelDelivered", p1)) == 1
    assert ("ShipmentCreated", created.json()["shipment_id"]) in seen
    assert [e for e, s in seen if s == p1] == [
        "ParcelAssigned",
        "ParcelOutForDelivery",
        "ParcelDelivered",
    ]

    # The event publisher dies; "mark delivered" still answers at once, and the event arrives
    # once the supervisor has restarted the publisher and Eventarc's retry reaches it.
    publisher_pids = listening_pids(runtime.base_port + 2)
    assert publisher_pids
    for pid in publisher_pids:
        os.kill(pid, signal.SIGKILL)
    delivered = httpx.post(
        f"{command}/v1/parcels/{p2}:deliver", json=deliver, headers=headers["driver"]
    )
    assert delivered.status_code == 202
    _events(broker, seen, time.monotonic() + 30, ("ParcelDelivered", p2))
    assert seen.count(("ParcelDelivered", p2)) == 1


def test_telemetry_is_judged_ping_by_ping_and_only_a_vehicles_driver_moves_it(
    runtime: Runtime,
) -> None:
    command = runtime.url("command")
    headers = _headers(runtime.data_dir)
    suffix = os.urandom(3).hex()
    parcel, vehicle, driver_a = f"p-{suffix}", f"veh-{suffix}", f"drv-a-{suffix}"
    issuer = LocalIdentityIssuer(runtime.data_dir)
    drives = {"Authorization": f"Bearer {issuer.token(driver_a, 'driver')}"}
    spoofer = {"Authorization": f"Bearer {issuer.token(f'drv-b-{suffix}', 'driver')}"}
    watch = f"e2e-pings-{suffix}"
    broker = Broker(runtime.data_dir)
    broker.create_subscription(
        SubscriptionConfig(
            name=watch, topic="vehicle.telemetry", filter=f'attributes.vehicleId = "{vehicle}"'
        )
    )
    created = httpx.post(
        f"{command}/v1/shipments", json={"parcels": [_parcel(parcel)]}, headers=headers["client"]
    )
    assert created.status_code == 202, created.text
    assign = {"route_id": f"r-{suffix}", "driver_id": driver_a, "vehicle_id": vehicle}
    assigned = httpx.post(
        f"{command}/v1/parcels/{parcel}:assign", json=assign, headers=headers["dispatcher"]
    )
    assert assigned.status_code == 202, assigned.text

    now = datetime.now(UTC)

    def ping(at: datetime) -> dict[str, Any]:
        position = {"lat": 12.97, "lng": 77.59}
        return {"vehicle_id": vehicle, "position": position, "recorded_at": at.isoformat()}

    # Another driver's pings for the vehicle are refused, each with the reason.
    spoofed = httpx.post(
        f"{command}/v1/telemetry", json={"pings": [ping(now)]}, headers=spoofer, timeout=10
    )
    assert spoofed.status_code == 202, spoofed.text
    assert spoofed.json()["accepted"] == 0
    assert "not your vehicle" in spoofed.json()["rejected"][0]["error"]
    # The vehicle's driver: the good ping is kept, whatever else is in the batch.
    batch = [ping(now), "not a ping", 42, ping(now + timedelta(days=365))]
    own = httpx.post(f"{command}/v1/telemetry", json={"pings": batch}, headers=drives, timeout=10)
    assert own.status_code == 202, own.text
    assert own.json()["accepted"] == 1
    assert [r["index"] for r in own.json()["rejected"]] == [1, 2, 3]
    assert "ahead of the server's clock" in own.json()["rejected"][2]["error"]

    codec = EventCodec(load_catalog())
    published: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for m in broker.pull(watch, 100):
            broker.acknowledge(watch, [m.ack_id])
            published.append(codec.from_message(m.message.data, m.message.attributes))
        if published:
            time.sleep(1)  # anything more would have been published with it
            published += [
                codec.from_message(m.message.data, m.message.attributes)
                for m in broker.pull(watch, 100)
            ]
            break
        time.sleep(0.1)
    assert [(e.driver_id, e.recorded_at) for e in published] == [(driver_a, now)]
