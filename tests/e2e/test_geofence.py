"""The geofence job inside `meridian up`: a fence created while it runs, a vehicle out for delivery
driven through it by its driver's app (POST /v1/telemetry), GeofenceCrossed on logistics.events,
and the ETA reactor moving that vehicle's route board to the crossing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from meridian.app.clients import register_client
from meridian.app.idempotency import event_ledger_path
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import GeofenceCrossed
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from pipelines.geofence.fences import METRES_PER_DEGREE
from tests.e2e.conftest import (
    Runtime,
    eventually,
    free_port_block,
    start_runtime,
    stop_runtime,
)

pytestmark = pytest.mark.e2e
LAT0, LNG0 = 12.95, 77.62  # the fence's centre; the parcel's stop is elsewhere
SERVICES = ("platform", "command", "event-publisher", "eta", "geofence-pipeline")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    data_dir = tmp_path_factory.mktemp("geofence")
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_BASE_PORT": str(free_port_block()),
        "MERIDIAN_SERVICES": ",".join(SERVICES),
        "MERIDIAN_EVENTARC_MIN_BACKOFF": "0.5",
        "MERIDIAN_EVENTARC_MAX_BACKOFF": "2",
        # A quick refresh and a short lateness keep the test short; defaults are 10 s each.
        "GEOFENCE_FENCE_REFRESH_S": "1",
        "GEOFENCE_ALLOWED_LATENESS_S": "2",
    }
    runtime = start_runtime(env, SERVICES[:-1])  # the pipeline has no port to answer on
    yield runtime
    stop_runtime(runtime)


def _pipeline_log(runtime: Runtime) -> str:
    path = runtime.data_dir / "logs" / "geofence-pipeline.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _out_for_delivery(runtime: Runtime, vehicle: str, route: str, driver: dict[str, str]) -> None:
    """A parcel on ``route`` goes out with ``vehicle``: the ETA reactor opens its route board."""
    store = all_stores(runtime.data_dir)
    key = register_client(store, f"c-{os.urandom(4).hex()}", "Freshmart")
    dispatcher = {
        "Authorization": f"Bearer {LocalIdentityIssuer(runtime.data_dir).token('dsp-1', 'dispatcher')}"
    }
    parcel = f"p-{os.urandom(4).hex()}"
    now = datetime.now(UTC)
    window = {"start": now.isoformat(), "end": (now + timedelta(hours=3)).isoformat()}
    shipment = {
        "parcels": [
            {
                "parcel_id": parcel,
                "recipient": {"name": "Asha", "phone": "+919812345678"},
                "stop": {
                    "location": {"lat": 12.97, "lng": 77.59},
                    "address": "MG Road",
                    "window": window,
                },
                "weight_kg": 1.5,
            }
        ]
    }
    with httpx.Client(base_url=runtime.url("command"), timeout=10) as http:
        response = http.post("/v1/shipments", json=shipment, headers={"X-API-Key": key})
        assert response.status_code == 202, response.text
        assign = {"route_id": route, "driver_id": "drv-7", "vehicle_id": vehicle}
        response = http.post(f"/v1/parcels/{parcel}:assign", json=assign, headers=dispatcher)
        assert response.status_code == 202, response.text
        out = {"vehicle_id": vehicle, "at": now.isoformat()}
        response = http.post(f"/v1/parcels/{parcel}:out-for-delivery", json=out, headers=driver)
        assert response.status_code == 202, response.text


def _drive_through(vehicle: str, start: float) -> list[dict[str, Any]]:
    """South to north through the fence at 40 m/s, a ping every 0.5 s, from 300 m south of its
    centre to 300 m north (the fence is a 150 m circle)."""
    return [
        {
            "vehicle_id": vehicle,
            "position": {"lat": LAT0 + (-300 + 20 * i) / METRES_PER_DEGREE, "lng": LNG0},
            "recorded_at": datetime.fromtimestamp(start + 0.5 * i, UTC).isoformat(),
            "speed_mps": 40.0,
        }
        for i in range(31)
    ]


def test_a_vehicle_driven_through_a_new_fence_crosses_it_and_the_eta_reactor_follows(
    runtime: Runtime,
) -> None:
    suffix = os.urandom(4).hex()
    vehicle, route, fence = f"veh-{suffix}", f"r-{suffix}", f"depot-{suffix}"
    codec = EventCodec(load_catalog())
    store = all_stores(runtime.data_dir)
    broker = Broker(runtime.data_dir)
    watch = f"e2e-geofence-{suffix}"
    broker.create_subscription(
        SubscriptionConfig(
            name=watch, topic="logistics.events", filter='attributes.eventType = "GeofenceCrossed"'
        )
    )
    driver = {
        "Authorization": f"Bearer {LocalIdentityIssuer(runtime.data_dir).token('drv-7', 'driver')}"
    }
    _out_for_delivery(runtime, vehicle, route, driver)
    eventually(lambda: store.get(f"route_board/{route}"), 20, "the ETA reactor's route board")

    # The fence is created while the job runs; it applies to pings from when the job loads it.
    store.set(
        f"geofences/{fence}",
        {
            "name": "Koramangala hub",
            "geometry": json.dumps({"type": "Point", "coordinates": [LNG0, LAT0]}),
            "radius_m": 150,
        },
    )
    eventually(
        lambda: "geofences loaded: 1 fences" in _pipeline_log(runtime),
        40,
        "the job to load the new fence",
    )
    pings = _drive_through(vehicle, time.time() + 0.5)
    with httpx.Client(base_url=runtime.url("command"), timeout=10) as http:
        response = http.post("/v1/telemetry", json={"pings": pings}, headers=driver)
        assert response.status_code == 202 and response.json()["accepted"] == len(pings)

    seen: list[GeofenceCrossed] = []

    def crossings() -> list[GeofenceCrossed] | None:
        for m in broker.pull(watch, 100):
            broker.acknowledge(watch, [m.ack_id])
            event = codec.from_message(m.message.data, m.message.attributes)
            assert m.message.ordering_key == vehicle
            seen.append(event)
        return seen if len(seen) >= 2 else None

    eventually(crossings, 40, "GeofenceCrossed on logistics.events")
    assert [(e.vehicle_id, e.geofence_id, e.direction.value) for e in seen] == [
        (vehicle, fence, "ENTER"),
        (vehicle, fence, "EXIT"),
    ]
    enter, exit_ = seen
    # Entered at the first ping inside the 135 m shrunk circle, left at the first outside 165 m.
    assert abs((enter.lat - LAT0) * METRES_PER_DEGREE + 135) <= 20
    assert abs((exit_.lat - LAT0) * METRES_PER_DEGREE - 165) <= 20
    assert 5 <= exit_.dwell_seconds <= 9

    # The ETA reactor consumed both (its ledger) and moved the route board to the crossing.
    for event in seen:
        eventually(
            lambda e=event: store.get(event_ledger_path("eta", e.event_id)),
            20,
            f"the ETA reactor to process {event.direction.value}",
        )
    board = store.get(f"route_board/{route}")
    assert board is not None
    assert board.data["as_of"] == exit_.crossed_at
    assert (board.data["position"]["lat"], board.data["position"]["lng"]) in {
        (enter.lat, enter.lng),
        (exit_.lat, exit_.lng),
    }
