"""The command service while another process holds its database's write lock (issue #24 item 2).

A second process opens the command service's own SQLite file and holds ``BEGIN IMMEDIATE`` for
``HOLD_S`` seconds (as a CLI, a TTL sweep or a checkpoint might, briefly). Meanwhile the service,
built by its own bootstrap on the embedded runtime and served on this test's event loop:

- answers ``/healthz`` promptly the whole time: its event loop never waits for the lock;
- takes a ``:deliver`` sent just after the lock was taken and answers it 202 once the lock is
  free, committed (its group waited on the writer thread, not on the loop);
- sheds a ``:deliver`` sent once that first one has waited past the bound (``MAX_WAIT_S``):
  503 ``overloaded`` with ``Retry-After``, nothing of it done; retried with the same idempotency
  key after the lock is free, it is accepted.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from meridian.app.auth import api_key_digest
from meridian.concurrency.group_commit import MAX_WAIT_S
from meridian.config import Settings
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.embedded.docstore.stores import ServiceStores
from meridian.ports import IdentityVerifier
from services.command.app import create_app
from services.command.bootstrap import bootstrap
from tests import lock_holder

HOLD_S = 3.0
# /healthz answers in about a millisecond in-process; the bound leaves room for a loaded CI
# machine and is still far below the seconds the lock is held.
HEALTHZ_BOUND_S = 0.5


class TokenVerifier(IdentityVerifier):
    """Tokens are 'role:subject'."""

    def verify(self, token: str) -> Actor:
        role, _, subject = token.partition(":")
        if role not in ("driver", "dispatcher") or not subject:
            raise Unauthenticated("bad token")
        return Actor(subject=subject, role=role)  # type: ignore[arg-type]


CLIENT = {"X-API-Key": "key-freshmart"}
DISPATCHER = {"Authorization": "Bearer dispatcher:dsp-1"}
DRIVER = {"Authorization": "Bearer driver:drv-7"}


def _parcel(parcel_id: str, now: datetime) -> dict[str, Any]:
    start = now + timedelta(hours=1)
    return {
        "parcel_id": parcel_id,
        "recipient": {"name": "Asha", "phone": "+919812345678"},
        "stop": {
            "location": {"lat": 12.97, "lng": 77.59},
            "address": "1 MG Road",
            "window": {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()},
        },
        "weight_kg": 2.5,
    }


def _deliver(now: datetime) -> dict[str, Any]:
    return {
        "vehicle_id": "veh-3",
        "delivered_at": now.isoformat(),
        "position": {"lat": 12.97, "lng": 77.59},
        "pod": {"signature_ref": "sig/p.png"},
    }


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def _out_for_delivery(client: httpx.AsyncClient, parcels: list[str], now: datetime) -> None:
    shipment = {"shipment_id": "s-1", "parcels": [_parcel(p, now) for p in parcels]}
    assert (await client.post("/v1/shipments", json=shipment, headers=CLIENT)).status_code == 202
    for parcel in parcels:
        assign = {"route_id": "r-1", "driver_id": "drv-7", "vehicle_id": "veh-3"}
        answer = await client.post(f"/v1/parcels/{parcel}:assign", json=assign, headers=DISPATCHER)
        assert answer.status_code == 202, answer.text
        out = {"vehicle_id": "veh-3", "at": now.isoformat()}
        answer = await client.post(
            f"/v1/parcels/{parcel}:out-for-delivery", json=out, headers=DRIVER
        )
        assert answer.status_code == 202, answer.text


async def _status(client: httpx.AsyncClient, parcel: str) -> str:
    answer = await client.get(f"/v1/parcels/{parcel}", headers=DISPATCHER)
    assert answer.status_code == 200, answer.text
    status: str = answer.json()["status"]
    return status


def test_the_loop_serves_while_another_process_holds_the_lock_and_deliveries_commit_or_shed(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    deps, _, _, _, transactions, ingest, _ = bootstrap(Settings(data_dir=tmp_path))
    store = deps.store
    assert isinstance(store, ServiceStores) and store.home == "command"
    database = store.store("command").file  # the command service's own
    store.create(
        f"api_keys/{api_key_digest('key-freshmart')}", {"client_id": "c-freshmart", "active": True}
    )
    app = create_app(deps, TokenVerifier(), transactions=transactions, ingest=ingest)
    now = datetime.now(UTC)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://command") as client:
            await _out_for_delivery(client, ["p-1", "p-2"], now)
            process = lock_holder.start(database, HOLD_S)
            holder.append(process)
            assert process.stdout is not None
            assert await asyncio.to_thread(process.stdout.readline) == "held\n"
            held_at = time.monotonic()

            first = asyncio.create_task(
                client.post(
                    "/v1/parcels/p-1:deliver",
                    json=_deliver(now),
                    headers={**DRIVER, "Idempotency-Key": "deliver-p-1"},
                )
            )
            # /healthz, every 20 ms while the lock is held.
            healthz: list[float] = []
            shed: httpx.Response | None = None
            while time.monotonic() - held_at < HOLD_S - 0.3:
                started = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                healthz.append(time.monotonic() - started)
                if shed is None and time.monotonic() - held_at > MAX_WAIT_S + 0.3:
                    assert not first.done()  # still waiting for the lock, on the writer thread
                    shed = await client.post(
                        "/v1/parcels/p-2:deliver",
                        json=_deliver(now),
                        headers={**DRIVER, "Idempotency-Key": "deliver-p-2"},
                    )
                await asyncio.sleep(0.02)

            accepted = await asyncio.wait_for(first, 30)
            answered_after = time.monotonic() - held_at
            assert await asyncio.to_thread(process.stdout.readline) == "freed\n"

            # The loop was never blocked: every /healthz answered promptly.
            assert len(healthz) > 50
            assert max(healthz) < HEALTHZ_BOUND_S, sorted(healthz)[-5:]
            # The first delivery waited for the lock and was committed: 202 means committed.
            assert accepted.status_code == 202, accepted.text
            assert answered_after >= HOLD_S - 0.3
            assert await _status(client, "p-1") == "DELIVERED"
            # The second was shed, with nothing done.
            assert shed is not None
            assert shed.status_code == 503
            assert shed.headers["content-type"] == "application/problem+json"
            assert int(shed.headers["retry-after"]) >= 1
            assert shed.json()["type"].endswith("/overloaded")
            assert await _status(client, "p-2") == "OUT_FOR_DELIVERY"
            # Retried once the lock is free, with the same key: accepted.
            retried = await client.post(
                "/v1/parcels/p-2:deliver",
                json=_deliver(now),
                headers={**DRIVER, "Idempotency-Key": "deliver-p-2"},
            )
            assert retried.status_code == 202, retried.text
            assert await _status(client, "p-2") == "DELIVERED"
            metrics = (await client.get("/metrics")).text
            assert "meridian_commit_shed_total" in metrics
            assert 'meridian_commit_groups_total{where="writer_thread"}' in metrics
        app.state.committer.close()

    asyncio.run(scenario())
    store.close()
