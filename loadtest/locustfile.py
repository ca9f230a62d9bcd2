"""Locust scenarios for the command path. ``LOADTEST_PLAN`` names a JSON file written by the
benchmark: the scenario, the tokens and the parcel ids to deliver (each delivered once)."""

from __future__ import annotations

import itertools
import json
import os
import random
from datetime import UTC, datetime, timedelta

from locust import FastHttpUser, constant, constant_throughput, task

PLAN = json.loads(open(os.environ["LOADTEST_PLAN"]).read())  # noqa: SIM115  (read once at start)
PARCELS = iter(PLAN.get("parcels", []))
COUNTER = itertools.count()
RATE = float(os.environ.get("LOADTEST_USER_RATE", "0"))


class Scenario(FastHttpUser):
    wait_time = constant_throughput(RATE) if RATE else constant(0)

    @task
    def post(self) -> None:
        now = datetime.now(UTC).isoformat()
        body = {
            "vehicle_id": "veh-1",
            "delivered_at": now,
            "position": {"lat": 12.97, "lng": 77.59},
        }
        if PLAN["scenario"] == "bare":
            self.client.post(f"/v1/echo/p-{next(COUNTER)}", json=body, name="bare POST")
        elif PLAN["scenario"] == "deliver":
            parcel_id, driver = next(PARCELS)
            headers = {
                "Authorization": f"Bearer {PLAN['tokens'][driver]}",
                "Idempotency-Key": f"k-{parcel_id}",
            }
            self.client.post(
                f"/v1/parcels/{parcel_id}:deliver", json=body, headers=headers, name=":deliver"
            )
        else:
            self.client.post(
                "/v1/telemetry",
                data=next(TELEMETRY_BODIES),
                headers={
                    "Authorization": f"Bearer {PLAN['tokens']['drv-0']}",
                    "Content-Type": "application/json",
                },
                name="telemetry x100",
            )


def _telemetry_bodies(count: int = 64) -> itertools.cycle[bytes]:
    """Batches of 100 pings, built once and sent in turn: encoding 100 pings per request would
    make the load generator, which shares the machine's two cores with the service, compete for
    CPU with what it measures (a driver app builds its batch on the phone).

    Posted by drv-0 for the vehicle it drives (``bench_command._seed`` puts every driver on
    veh-1): a driver may report only its own vehicle. Each ping of the cycle has its own time
    (so its own event id), all from the last two hours, well within the day the service accepts."""
    start = datetime.now(UTC) - timedelta(seconds=500 + 100 * count)
    bodies = []
    for batch in range(count):
        pings = [
            {
                "vehicle_id": "veh-1",
                "recorded_at": (start + timedelta(seconds=100 * batch + i)).isoformat(),
                "position": {
                    "lat": 12.9 + random.random() / 10,
                    "lng": 77.5 + random.random() / 10,
                },
                "speed_mps": 8.0,
                "heading_deg": 90.0,
            }
            for i in range(100)
        ]
        bodies.append(json.dumps({"pings": pings}).encode())
    return itertools.cycle(bodies)


TELEMETRY_BODIES = _telemetry_bodies()
