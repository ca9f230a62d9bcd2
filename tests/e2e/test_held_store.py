"""Another process holds the billing reactor's store for seconds (``BEGIN IMMEDIATE``, as a
long migration or a stuck writer would), with the whole platform up (``meridian up``): the
command service's ``:deliver`` and ``/healthz`` stay at the latency they had idle, measured in
the same test, and billing's effects arrive once the lock frees, once each.

The store's file is found as the platform finds it: the catalog's ownership names billing's home
store, and ``store_file`` where that store lives. Each service owning its store is what #24 asks;
before it, billing's file was the one every service shared, and this test failed."""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from meridian.catalog import load_catalog
from meridian.documents.ownership import Ownership
from meridian.embedded.docstore.stores import store_file
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy
from tests import lock_holder
from tests.e2e.conftest import eventually
from tests.e2e.test_reactors import REACTORS
from tests.e2e.whole_platform import send_out, wait_drained, whole_platform

pytestmark = pytest.mark.e2e
HOLD_S = 5.0
SAMPLES = 20  # deliveries (and health checks) idle, and as many while the lock is held


def _timed(call: Callable[[], httpx.Response], answers: Counter[int]) -> float:
    started = time.perf_counter()
    answers[call().status_code] += 1
    return time.perf_counter() - started


def _at_idle_latency(name: str, idle: list[float], held: list[float]) -> None:
    """The typical request as fast as idle (within the noise of a shared 2-core machine) and the
    slowest far from the hold: none waited for the lock."""
    print(
        f"{name}: idle p50 {statistics.median(idle) * 1000:.1f} ms, max {max(idle) * 1000:.1f} "
        f"ms; while held: p50 {statistics.median(held) * 1000:.1f} ms, max "
        f"{max(held) * 1000:.1f} ms"
    )
    assert statistics.median(held) <= 3 * statistics.median(idle), (name, idle, held)
    assert max(held) <= 10 * max(idle), (name, idle, held)


def test_a_write_held_on_a_reactors_store_leaves_deliver_and_healthz_at_idle_latency(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with whole_platform(data_dir) as platform:
        broker = Broker(data_dir)  # Pub/Sub's retries from 10 s up; shorter so the test is short
        config = broker.get_subscription("billing")
        broker.update_subscription(dataclasses.replace(config, retry=RetryPolicy(0.5, 2.0)))
        client = platform.client()
        driver = f"drv-{os.urandom(3).hex()}"
        parcels = send_out(platform, client, 2 * SAMPLES, driver)
        assert wait_drained(platform.settings, REACTORS, 60)[0], "out-for-delivery wave"
        command = httpx.Client(base_url=platform.url("command"), timeout=30)
        headers = platform.driver_headers(driver)

        def deliver(parcel: str) -> httpx.Response:
            body = {
                "vehicle_id": "veh-3",
                "delivered_at": datetime.now(UTC).isoformat(),
                "position": {"lat": 12.97, "lng": 77.59},
                "pod": {"signature_ref": f"sig-{parcel}"},
            }
            return command.post(f"/v1/parcels/{parcel}:deliver", json=body, headers=headers)

        answers: Counter[int] = Counter()

        def sample(batch: list[str]) -> tuple[list[float], list[float]]:
            delivering, health = [], []
            for parcel in batch:
                delivering.append(_timed(functools.partial(deliver, parcel), answers))
                health.append(_timed(lambda: command.get("/healthz"), answers))
                time.sleep(0.1)
            return delivering, health

        idle = sample(parcels[:SAMPLES])
        assert wait_drained(platform.settings, REACTORS, 60)[0], "the idle deliveries' effects"

        billing = store_file(data_dir, Ownership.of(load_catalog()).homes["billing"])
        holder = lock_holder.start(billing, HOLD_S)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            held = sample(parcels[SAMPLES:])
            still_held = holder.poll() is None
        finally:
            holder.wait(timeout=HOLD_S + 30)
        _at_idle_latency(":deliver", idle[0], held[0])
        _at_idle_latency("/healthz", idle[1], held[1])
        assert answers == {202: 2 * SAMPLES, 200: 2 * SAMPLES}, answers
        assert still_held, "the samples outlasted the hold: make HOLD_S longer"

        def charges() -> Counter[str]:
            listed = httpx.get(f"{platform.url('billing-api')}/v1/charges", timeout=30).json()
            return Counter(c["reference"] for c in listed)

        eventually(
            lambda: all(charges()[p] for p in parcels),
            timeout_s=60,
            what="billing's charges once the lock is free",
        )
        assert wait_drained(platform.settings, ["billing"], 60)[0]
        time.sleep(1)  # a charge made twice would show now
        counted = charges()
        dead_letters = broker.metrics("billing").dead_letter_depth

    assert {p: counted[p] for p in parcels if counted[p] != 1} == {}  # each charged once
    assert dead_letters == 0
