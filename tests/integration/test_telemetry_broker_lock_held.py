"""The command service's telemetry while another process holds the broker's write lock (issue #24
item 2).

A second process opens the embedded Pub/Sub broker's SQLite file, which every process of the
data directory writes (acks, Eventarc's forwarder, the event publisher), and holds
``BEGIN IMMEDIATE`` for ``HOLD_S`` seconds. Meanwhile the command service, built by its own
bootstrap on the embedded runtime and served on this test's event loop:

- answers ``/healthz`` promptly the whole time: its event loop never waits for the lock;
- takes a telemetry batch sent just after the lock was taken and answers it 202 once the lock is
  free, its pings then published exactly once (the batch waited on the ingest thread);
- sheds a batch sent once that first one has waited past the bound (``MAX_WAIT_S``): 503
  ``overloaded`` with ``Retry-After``, none of its pings published; sent again after the lock is
  free, it is accepted.

With the wiring before (the batch ingested ``Inline``, its publish waiting for the lock on the
loop) this test fails: one ``/healthz`` is answered during the hold, then the loop waits with the
first batch's publish until the lock is free.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.concurrency.offload import MAX_WAIT_S
from meridian.config import Settings
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.domain.events import VehiclePing
from meridian.embedded.pubsub.adapter import EmbeddedPubSub
from meridian.embedded.pubsub.broker import DB_FILE
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.ports import IdentityVerifier
from services.command.app import create_app
from services.command.bootstrap import bootstrap
from tests import lock_holder

HOLD_S = 3.0
# /healthz answers in about a millisecond in-process; the bound leaves room for a loaded CI
# machine and is still far below the seconds the lock is held.
HEALTHZ_BOUND_S = 0.5
GATEWAY = {"Authorization": "Bearer gateway:gw-fleet"}


class TokenVerifier(IdentityVerifier):
    def verify(self, token: str) -> Actor:
        role, _, subject = token.partition(":")
        if role != "gateway" or not subject:
            raise Unauthenticated("bad token")
        return Actor(subject=subject, role="gateway")


def batch(vehicles: list[str], now: datetime) -> dict[str, Any]:
    at = (now - timedelta(seconds=5)).isoformat()
    position = {"lat": 12.9, "lng": 77.6}
    return {"pings": [{"vehicle_id": v, "position": position, "recorded_at": at} for v in vehicles]}


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_the_loop_serves_while_another_process_holds_the_broker_and_batches_publish_or_shed(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    deps, _, _, _, transactions, ingest, _ = bootstrap(Settings(data_dir=tmp_path))
    pubsub = deps.publisher
    assert isinstance(pubsub, EmbeddedPubSub)
    broker = pubsub.broker
    broker.apply_catalog(
        load_catalog(), lambda service, path: f"http://127.0.0.1:9/{service}{path}"
    )
    topic = deps.codec.topic_of(VehiclePing.event_type)
    broker.create_subscription(SubscriptionConfig(name="test-pings", topic=topic))
    app = create_app(deps, TokenVerifier(), transactions=transactions, ingest=ingest)
    now = datetime.now(UTC)
    first_batch = [f"veh-a{i}" for i in range(100)]
    shed_batch = [f"veh-b{i}" for i in range(100)]

    shed_before, on_thread_before = counted()

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://command") as client:
            warm = await client.post("/v1/telemetry", json=batch(["veh-0"], now), headers=GATEWAY)
            assert warm.status_code == 202, warm.text
            process = lock_holder.start(tmp_path / DB_FILE, HOLD_S)
            holder.append(process)
            assert process.stdout is not None
            assert await asyncio.to_thread(process.stdout.readline) == "held\n"
            held_at = time.monotonic()

            first = asyncio.create_task(
                client.post("/v1/telemetry", json=batch(first_batch, now), headers=GATEWAY)
            )
            # /healthz, every 20 ms while the lock is held.
            healthz: list[float] = []
            shed: httpx.Response | None = None
            while time.monotonic() - held_at < HOLD_S - 0.3:
                started = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                healthz.append(time.monotonic() - started)
                if shed is None and time.monotonic() - held_at > MAX_WAIT_S + 0.3:
                    assert not first.done()  # still waiting for the lock, on the ingest thread
                    shed = await client.post(
                        "/v1/telemetry", json=batch(shed_batch, now), headers=GATEWAY
                    )
                await asyncio.sleep(0.02)

            accepted = await asyncio.wait_for(first, 30)
            answered_after = time.monotonic() - held_at
            assert await asyncio.to_thread(process.stdout.readline) == "freed\n"

            # The loop was never blocked: every /healthz answered promptly.
            assert len(healthz) > 50
            assert max(healthz) < HEALTHZ_BOUND_S, sorted(healthz)[-5:]
            # The first batch waited for the lock, then was published: accepted whole.
            assert accepted.status_code == 202, accepted.text
            assert accepted.json() == {"accepted": 100, "rejected": []}
            assert answered_after >= HOLD_S - 0.3
            # The second was shed, with nothing published.
            assert shed is not None
            assert shed.status_code == 503
            assert shed.headers["content-type"] == "application/problem+json"
            assert int(shed.headers["retry-after"]) >= 1
            assert shed.json()["type"].endswith("/overloaded")
            published = await asyncio.to_thread(vehicles_published, pubsub)
            assert published == Counter(["veh-0", *first_batch])  # each exactly once
            # Sent again once the lock is free: accepted, on the loop.
            retried = await client.post(
                "/v1/telemetry", json=batch(shed_batch, now), headers=GATEWAY
            )
            assert retried.status_code == 202, retried.text
            published += await asyncio.to_thread(vehicles_published, pubsub)
            assert published == Counter(["veh-0", *first_batch, *shed_batch])
            # Counted: one batch shed, one published on the ingest thread.
            assert (await client.get("/metrics")).status_code == 200
            assert counted() == (shed_before + 1, on_thread_before + 1)

    asyncio.run(scenario())
    app.state.committer.close()
    broker.close()
    deps.store.close()  # type: ignore[attr-defined]


def counted() -> tuple[float, float]:
    """``meridian_publish_shed_total`` and the batches published on the ingest thread so far in
    this process (the registry is the process's: other tests count too)."""
    shed = REGISTRY.get_sample_value("meridian_publish_shed_total") or 0.0
    where = {"where": "publisher_thread"}
    return shed, REGISTRY.get_sample_value("meridian_publish_batches_total", where) or 0.0


def vehicles_published(pubsub: EmbeddedPubSub) -> Counter[str]:
    """The vehicle of every ping on the test's own subscription since the last call, acked."""
    codec = EventCodec(load_catalog())
    seen: Counter[str] = Counter()
    while received := pubsub.pull("test-pings", 1000):
        for message in received:
            ping = codec.from_message(message.message.data, message.message.attributes)
            seen[ping.vehicle_id] += 1
        pubsub.acknowledge("test-pings", [m.ack_id for m in received])
    return seen
