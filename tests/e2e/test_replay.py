"""Seek-replay over real processes (#22 item 5): parcels delivered through the command service
reach the billing reactor by push; `meridian replay --subscription billing --to T` seeks its
subscription back to before the deliveries; every ParcelDelivered is pushed again and
acknowledged as a duplicate (the reactor's processed-event ids), with no second charge. The
events are archived in the warehouse by the platform's BigQuery-subscription sink on the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from meridian.app.idempotency import event_ledger_path
from meridian.catalog import load_catalog
from meridian.config import Settings
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.runtime.platform import prepare_data_dir
from tests.e2e.conftest import MERIDIAN, ROOT, Runtime, eventually, free_port_block
from tests.e2e.test_reactors import _charges, _client, _deliver, _send_out, stop_services

pytestmark = pytest.mark.e2e

# Only what a delivery needs to reach billing: fewer processes start faster on two cores.
MODULES = {
    "platform": "meridian.runtime.platform",
    "billing-api": "meridian.embedded.external.billing_api",
    "command": "services.command.app",
    "event-publisher": "services.event_publisher.app",
    "billing": "services.reactors.billing.app",
}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    data_dir = tmp_path_factory.mktemp("replay")
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_BASE_PORT": str(free_port_block(24)),
        "MERIDIAN_EVENTARC_MIN_BACKOFF": "0.5",
        "MERIDIAN_EVENTARC_MAX_BACKOFF": "2",
        "MERIDIAN_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    settings = Settings(data_dir=data_dir, base_port=int(env["MERIDIAN_BASE_PORT"]))
    prepare_data_dir(load_catalog(), settings)
    processes = []
    for name, module in MODULES.items():
        log = (data_dir / f"{name}.log").open("ab")
        child = {**env, "PORT": str(settings.port_of(name)), "MERIDIAN_SERVICE": name}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", module], env=child, cwd=ROOT, stdout=log, stderr=log
            )
        )
    runtime = Runtime(processes[0], data_dir, settings.base_port)  # type: ignore[arg-type]
    try:
        for name in MODULES:
            eventually(
                lambda name=name: _healthy(runtime, name),  # type: ignore[misc]
                timeout_s=90,
                what=f"{name} healthy (see {data_dir}/{name}.log)",
            )
        yield runtime
    finally:
        stop_services(processes)


def _healthy(runtime: Runtime, name: str) -> bool:
    try:
        return httpx.get(f"{runtime.url(name)}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _archived_deliveries(runtime: Runtime, parcels: list[str]) -> dict[str, str] | None:
    """parcel → the event id of its ParcelDelivered, once the archive holds all of them."""
    try:
        rows = EmbeddedWarehouse(runtime.data_dir).query(
            "SELECT attributes FROM events.business_events"
        )
    except Exception:  # not archived yet: the table appears with its first rows
        return None
    found = {}
    for row in rows:
        attributes = json.loads(row["attributes"])
        if attributes["eventType"] == "ParcelDelivered" and attributes["subject"] in parcels:
            found[attributes["subject"]] = attributes["eventId"]
    return found if len(found) == len(parcels) else None


def test_seek_replay_reprocesses_the_window_once_per_event_id(runtime: Runtime) -> None:
    client = _client(runtime)
    parcels = _send_out(runtime, client, 3, f"r-{os.urandom(3).hex()}")
    broker = Broker(runtime.data_dir)
    eventually(lambda: broker.metrics("billing").backlog == 0, what="billing idle before")
    before = datetime.now(UTC) - timedelta(milliseconds=50)
    with httpx.Client(base_url=runtime.url("command"), timeout=10) as command:
        for parcel in parcels:
            _deliver(command, client, parcel)
    for parcel in parcels:
        eventually(lambda p=parcel: _charges(runtime, p), what=f"the charge of {parcel}")  # type: ignore[misc]
    event_ids = eventually(lambda: _archived_deliveries(runtime, parcels), what="the archive")
    store = all_stores(runtime.data_dir)
    for event_id in event_ids.values():
        assert store.get(event_ledger_path("billing", event_id)) is not None
    eventually(lambda: broker.metrics("billing").backlog == 0, what="billing idle after")
    acked, delivered = (
        broker.metrics("billing").acked_total,
        broker.metrics("billing").delivered_total,
    )

    replay = subprocess.run(
        [*MERIDIAN, "replay", "--subscription", "billing", "--to", before.isoformat()],
        env={**os.environ, "MERIDIAN_DATA_DIR": str(runtime.data_dir), "COLUMNS": "200"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert f"subscription billing sought to {before.isoformat()}" in replay.stdout

    # Each ParcelDelivered of the window is pushed again and acknowledged: a duplicate.
    def redelivered() -> bool:
        m = broker.metrics("billing")
        again = len(parcels)
        pushed_again = m.delivered_total - delivered >= again
        return m.backlog == 0 and pushed_again and m.acked_total - acked >= again

    eventually(redelivered, timeout_s=30, what="the window pushed again and acknowledged")
    time.sleep(1)
    for parcel in parcels:
        assert len(_charges(runtime, parcel)) == 1, parcel
    assert broker.metrics("billing").dead_letter_depth == 0
