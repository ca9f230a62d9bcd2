"""Above what the reactors sustain, nothing is lost: the whole platform (``meridian up``) takes
``:deliver`` faster than its six reactors keep up with for a few seconds, like drivers' apps
(a ``503`` is sent again after its ``Retry-After``); the backlogs grow, and once the load stops
and they drain, every accepted delivery has had each of its effects exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_reactors import REACTORS
from tests.e2e.whole_platform import (
    Backlogs,
    backlogs,
    deliver_open_loop,
    document,
    send_out,
    serve_webhooks,
    wait_drained,
    whole_platform,
)

pytestmark = pytest.mark.e2e
DELIVERED_TEXT = re.compile(r"Your parcel (\S+) was delivered")
# Above what the six reactors keep up with on the 2-core machine (BENCHMARKS.md, "Reactors": 50
# deliveries/s drain as they come, 100/s do not), for a few seconds.
RATE, SECONDS = 200, 3


def test_above_the_sustainable_rate_every_effect_arrives_exactly_once(tmp_path: Path) -> None:
    env = {"MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"}
    with whole_platform(tmp_path / "data", env=env) as platform:
        client = platform.client()
        driver = f"drv-{os.urandom(3).hex()}"
        with serve_webhooks(platform, client) as hooks:
            parcels = send_out(platform, client, RATE * SECONDS, driver)
            assert wait_drained(platform.settings, REACTORS, 60)[0], "out-for-delivery wave"

            readings: list[Backlogs] = [backlogs(platform.settings)]
            sending = threading.Event()
            sending.set()

            def watch() -> None:
                while sending.is_set():
                    readings.append(backlogs(platform.settings))
                    time.sleep(0.5)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                delivered = asyncio.run(
                    deliver_open_loop(
                        platform.url("command"),
                        parcels,
                        platform.driver_headers(driver),
                        RATE,
                    )
                )
            finally:
                sending.clear()
                watcher.join()
            assert not delivered.refused, delivered.refused
            assert set(delivered.latency_s) == set(parcels)  # every one accepted in the end
            # The reactors fell behind while the load lasted: what waits for them (their
            # backlogs, and the changes Eventarc has yet to send) grew past half a second's worth.
            pending = [
                sum(r.backlog[s] for s in REACTORS) + sum(r.eventarc_lag.values()) for r in readings
            ]
            assert max(pending) > pending[0] + RATE / 2, pending

            drained, _ = wait_drained(platform.settings, REACTORS, 90)
            assert drained, "the reactors did not drain within 90 s of the load stopping"
            time.sleep(1)  # a late duplicate would show up now
            received = list(hooks)
        command = httpx.Client(base_url=platform.url("command"), timeout=30)
        charges = Counter(
            c["reference"]
            for c in httpx.get(f"{platform.url('billing-api')}/v1/charges", timeout=30).json()
        )
        texts = Counter(
            found[1]
            for m in httpx.get(f"{platform.url('sms-gateway')}/v1/messages", timeout=30).json()
            if (found := DELIVERED_TEXT.match(m["body"]))
        )
        webhooks = Counter(parcel for _, kind, parcel in received if kind == "ParcelDelivered")
        statuses = {
            p: command.get(f"/v1/parcels/{p}", headers=client.driver).json() for p in parcels
        }
        score = document(platform, f"driver_scores/{driver}")

    assert {p: charges[p] for p in parcels if charges[p] != 1} == {}  # one charge per parcel
    assert {p: texts[p] for p in parcels if texts[p] != 1} == {}  # one "delivered" text
    assert {p: webhooks[p] for p in parcels if webhooks[p] != 1} == {}  # one webhook POST
    assert len({hook_id for hook_id, _, _ in received}) == len(received)
    assert [p for p, s in statuses.items() if not s.get("pod_complete")] == []  # POD record
    assert [p for p, s in statuses.items() if s.get("sla") != "met"] == []  # the ETA's status
    assert score is not None and score["delivered"] == len(parcels)  # counted once each
    print(
        f"{len(parcels)} deliveries at {RATE}/s: p50 {delivered.quantile_ms(0.5):.0f} ms, "
        f"p99 {delivered.quantile_ms(0.99):.0f} ms, {delivered.shed} shed and retried; "
        f"reactor backlog peaked at {max(pending)}"
    )
