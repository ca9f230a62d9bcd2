"""The live map over real processes: pings posted to the command service reach a customer's
tracking stream through the broker, the debounced writer and the document store's listeners;
tokens are scoped (401/403/410); dispatchers see the fleet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from meridian.app.clients import register_client
from meridian.app.tracking import TrackingTokens
from meridian.catalog import load_catalog
from meridian.config import PORT_OFFSETS, Settings
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.runtime.platform import prepare_data_dir
from meridian.runtime.supervisor import runnable_services
from tests.e2e.conftest import ROOT, free_port_block

pytestmark = pytest.mark.e2e


@dataclass
class Services:
    """The command and live-map services as their own processes (as ``meridian up`` runs them:
    the live map as a position writer and a tracking-stream process), on a data dir whose
    topology was applied first; the other services are not needed here."""

    data_dir: Path
    base_port: int
    children: list[subprocess.Popen[bytes]]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.base_port + PORT_OFFSETS[service]}"


def start_services(data_dir: Path, names: tuple[str, ...] = ("command", "live-map")) -> Services:
    base_port = free_port_block()
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_BASE_PORT": str(base_port),
        "MERIDIAN_HOST": "127.0.0.1",
        "LIVE_MAP_DEBOUNCE_S": "0.5",
        # The notification reactor's SMS links open this live map, whatever the shell says.
        "MERIDIAN_TRACKING_BASE_URL": f"http://127.0.0.1:{base_port + PORT_OFFSETS['live-map']}",
        "PYTHONPATH": str(ROOT),
    }
    settings = Settings(data_dir=data_dir, base_port=base_port)
    prepare_data_dir(load_catalog(), settings)
    services = Services(data_dir, base_port, [])
    processes = [
        process
        for process in runnable_services(load_catalog(), settings)
        if any(process.belongs_to(name) for name in names)
    ]
    for process in processes:
        log = (data_dir / f"{process.name}.log").open("ab")
        services.children.append(
            subprocess.Popen(
                list(process.argv),
                env={
                    **env,
                    **process.env,
                    "PORT": str(process.port),
                    "MERIDIAN_SERVICE": process.name,
                },
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 60
    for name in (process.name for process in processes):
        while True:
            try:
                httpx.get(f"{services.url(name)}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or any(
                    c.poll() is not None for c in services.children
                ):
                    stop_services(services)
                    raise RuntimeError(
                        f"{name} did not come up; see {data_dir}/{name}.log"
                    ) from None
                time.sleep(0.2)
    return services


def stop_services(services: Services) -> None:
    for child in services.children:
        child.send_signal(signal.SIGTERM)
    for child in services.children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = start_services(tmp_path_factory.mktemp("live-map"))
    yield services
    stop_services(services)


@dataclass
class Delivery:
    """A parcel out for delivery on its own vehicle, with the customer's tracking token."""

    parcel_id: str
    vehicle_id: str
    token: str
    driver: dict[str, str]
    dispatcher: dict[str, str]


def out_for_delivery(runtime: Services, stop: tuple[float, float] = (12.97, 77.59)) -> Delivery:
    suffix = os.urandom(4).hex()
    issuer = LocalIdentityIssuer(runtime.data_dir)
    driver = {"Authorization": f"Bearer {issuer.token(f'drv-{suffix}', 'driver')}"}
    dispatcher = {"Authorization": f"Bearer {issuer.token('dsp-1', 'dispatcher')}"}
    key = register_client(all_stores(runtime.data_dir), f"c-{suffix}", "Freshmart")
    now = datetime.now(UTC)
    parcel_id, vehicle_id = f"p-{suffix}", f"veh-{suffix}"
    parcel = {
        "parcel_id": parcel_id,
        "recipient": {"name": "Asha", "phone": "+919812345678"},
        "stop": {
            "location": {"lat": stop[0], "lng": stop[1]},
            "address": "1 MG Road",
            "window": {"start": now.isoformat(), "end": (now + timedelta(hours=2)).isoformat()},
        },
        "weight_kg": 1.5,
    }
    command = runtime.url("command")
    with httpx.Client(base_url=command, timeout=10) as client:
        client.post(
            "/v1/shipments", json={"parcels": [parcel]}, headers={"X-API-Key": key}
        ).raise_for_status()
        client.post(
            f"/v1/parcels/{parcel_id}:assign",
            json={
                "route_id": f"r-{suffix}",
                "driver_id": f"drv-{suffix}",
                "vehicle_id": vehicle_id,
            },
            headers=dispatcher,
        ).raise_for_status()
        client.post(
            f"/v1/parcels/{parcel_id}:out-for-delivery",
            json={"vehicle_id": vehicle_id, "at": now.isoformat()},
            headers=driver,
        ).raise_for_status()
    token = TrackingTokens.for_data_dir(runtime.data_dir).issue(parcel_id)
    return Delivery(parcel_id, vehicle_id, token, driver, dispatcher)


def post_ping(runtime: Services, delivery: Delivery, lat: float, lng: float, at: datetime) -> None:
    ping = {
        "vehicle_id": delivery.vehicle_id,
        "position": {"lat": lat, "lng": lng},
        "recorded_at": at.isoformat(),
        "heading_deg": 10.0,
        "speed_mps": 8.0,
    }
    response = httpx.post(
        f"{runtime.url('command')}/v1/telemetry",
        json={"pings": [ping]},
        headers=delivery.driver,
        timeout=10,
    )
    assert response.status_code == 202 and response.json()["accepted"] == 1, response.text


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:])
        elif not line:
            name = "message"


def next_of(events: Iterator[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    for name, data in events:
        if name == kind:
            return data
    raise AssertionError(f"the stream ended before a {kind} event")


def test_pings_reach_the_customers_stream_until_delivery(runtime: Services) -> None:
    delivery = out_for_delivery(runtime)
    url = f"{runtime.url('live-map')}/v1/track/{delivery.parcel_id}"
    start = datetime.now(UTC)
    with httpx.stream(
        "GET", url, headers={"Authorization": f"Bearer {delivery.token}"}, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        assert next_of(events, "status")["status"] == "OUT_FOR_DELIVERY"
        post_ping(runtime, delivery, 12.90, 77.50, start)
        first = next_of(events, "vehicle")
        assert (first["lat"], first["lng"]) == (12.90, 77.50)
        # An out-of-order ping and then a newer one: only the newer one is ever shown.
        post_ping(runtime, delivery, 1.0, 1.0, start - timedelta(seconds=30))
        post_ping(runtime, delivery, 12.91, 77.51, start + timedelta(seconds=5))
        second = next_of(events, "vehicle")
        assert (second["lat"], second["lng"]) == (12.91, 77.51)

        httpx.post(
            f"{runtime.url('command')}/v1/parcels/{delivery.parcel_id}:deliver",
            json={
                "vehicle_id": delivery.vehicle_id,
                "delivered_at": datetime.now(UTC).isoformat(),
                "position": {"lat": 12.97, "lng": 77.59},
            },
            headers=delivery.driver,
            timeout=10,
        ).raise_for_status()
        assert next_of(events, "end")["status"] == "DELIVERED"
    # A delivered parcel's link is spent.
    gone = httpx.get(url, params={"token": delivery.token}, timeout=10)
    assert gone.status_code == 410
    assert gone.json()["final_status"] == "DELIVERED"


def test_tracking_tokens_are_scoped_to_one_parcel(runtime: Services) -> None:
    mine, other = out_for_delivery(runtime), out_for_delivery(runtime)
    base = runtime.url("live-map")

    def status(parcel_id: str, token: str | None) -> int:
        params = {"token": token} if token else {}
        return httpx.get(f"{base}/v1/track/{parcel_id}", params=params, timeout=10).status_code

    tokens = TrackingTokens.for_data_dir(runtime.data_dir)
    forged = TrackingTokens(b"f" * 32).issue(mine.parcel_id)
    expired = TrackingTokens(
        (runtime.data_dir / "tracking" / "secret").read_bytes(), clock=lambda: 1_000_000.0
    ).issue(mine.parcel_id, ttl_s=60)
    assert status(mine.parcel_id, None) == 401
    assert status(mine.parcel_id, forged) == 401
    assert status(mine.parcel_id, expired) == 401
    assert status(other.parcel_id, mine.token) == 403
    assert status(mine.parcel_id, tokens.issue(other.parcel_id)) == 403
    answer = httpx.get(
        f"{base}/v1/track/{mine.parcel_id}",
        headers={"Authorization": "Bearer not-a-jwt"},
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"


def test_dispatchers_see_every_vehicle_and_nobody_else_does(runtime: Services) -> None:
    delivery = out_for_delivery(runtime)
    url = f"{runtime.url('live-map')}/v1/fleet/stream"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers=delivery.driver, timeout=10).status_code == 403
    assert httpx.get(url, params={"token": delivery.token}, timeout=10).status_code == 401
    post_ping(runtime, delivery, 12.95, 77.55, datetime.now(UTC))
    with httpx.stream("GET", url, headers=delivery.dispatcher, timeout=30) as response:
        assert response.status_code == 200
        for name, data in sse_events(response):
            if name == "vehicle" and data["vehicle_id"] == delivery.vehicle_id:
                assert (data["lat"], data["lng"]) == (12.95, 77.55)
                break


def test_the_map_pages_and_leaflet_are_served_offline(runtime: Services) -> None:
    base = runtime.url("live-map")
    for page in ("/map", "/dispatch"):
        html = httpx.get(f"{base}{page}", timeout=10)
        assert html.status_code == 200
        assert "/assets/leaflet/leaflet.js" in html.text
        assert '"tileUrl": ""' in html.text  # no base tiles unless configured
    assert httpx.get(f"{base}/assets/leaflet/leaflet.js", timeout=10).status_code == 200
    assert httpx.get(f"{base}/static/map.js", timeout=10).status_code == 200
    assert httpx.get(f"{base}/assets/leaflet/../../package.json", timeout=10).status_code == 404


def test_the_writer_and_the_streams_run_as_processes_of_their_own(runtime: Services) -> None:
    writer = httpx.get(f"{runtime.url('live-map-writer')}/healthz", timeout=10).json()
    streams = httpx.get(f"{runtime.url('live-map')}/healthz", timeout=10).json()
    assert writer["role"] == "writer" and writer["writer"]["consumed"] > 0
    assert streams["role"] == "streams" and "writer" not in streams
    assert httpx.get(f"{runtime.url('live-map-writer')}/map", timeout=10).status_code == 404
