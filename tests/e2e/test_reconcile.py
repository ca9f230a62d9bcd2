"""`meridian reconcile` over real processes: parcels delivered through the command service reach
the ETA, billing and client-webhook reactors, and reconciliation agrees (exit 0); a billing
charge deleted behind the platform's back makes it exit 1 naming the parcel."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import ThreadingHTTPServer

import httpx
import pytest

from meridian.embedded.docstore.stores import all_stores
from meridian.ports import Query
from tests.e2e.conftest import MERIDIAN, Runtime, eventually, free_port_block
from tests.e2e.test_reactors import (
    NOW,
    Receiver,
    _client,
    _deliver,
    _send_out,
    start_services,
    stop_services,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    data_dir = tmp_path_factory.mktemp("reconcile")
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(data_dir),
        "MERIDIAN_BASE_PORT": str(free_port_block(24)),
        "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "MERIDIAN_LOG_LEVEL": "WARNING",
    }
    runtime, processes = start_services(env, data_dir)
    yield runtime
    stop_services(processes)


def _reconcile(runtime: Runtime) -> subprocess.CompletedProcess[str]:
    day = _send_out_day()
    return subprocess.run(
        [*MERIDIAN, "reconcile", "--day", day, "--in-flight", "0"],
        env={**os.environ, "MERIDIAN_DATA_DIR": str(runtime.data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _send_out_day() -> str:
    return (NOW + timedelta(hours=3)).date().isoformat()  # _send_out's window end


def test_reconcile_agrees_after_deliveries_and_names_a_parcel_whose_charge_was_deleted(
    runtime: Runtime,
) -> None:
    client = _client(runtime)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    command = httpx.Client(base_url=runtime.url("command"), timeout=10)
    registered = command.post(
        f"/v1/clients/{client.client_id}/webhooks",
        json={
            "url": f"http://127.0.0.1:{server.server_port}/hooks",
            "event_types": ["ParcelDelivered"],
        },
        headers={"X-API-Key": client.api_key},
    )
    assert registered.status_code == 201, registered.text
    parcels = _send_out(runtime, client, 3, route=f"r-{os.urandom(3).hex()}")
    for parcel in parcels:
        _deliver(command, client, parcel)
    store = all_stores(runtime.data_dir)

    def settled() -> bool | None:
        for parcel in parcels:
            view = store.get(f"parcel_status/{parcel}")
            if view is None or view.data.get("sla") not in ("met", "breached"):
                return None
            if not store.query(Query("billing_ledger").where("reference", "==", parcel)):
                return None
        hooks = store.query(Query("webhook_deliveries").where("client_id", "==", client.client_id))
        return len(hooks) == len(parcels) or None

    eventually(settled, timeout_s=60, what="the reactors' effects of three deliveries")

    agreed = _reconcile(runtime)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "all agree" in agreed.stdout

    charge = store.query(Query("billing_ledger").where("reference", "==", parcels[1]))[0]
    store.delete(charge.path)  # behind the platform's back
    disagreed = _reconcile(runtime)
    assert disagreed.returncode == 1, disagreed.stdout + disagreed.stderr
    assert f"{parcels[1]}\tbilling\tdelivered but not charged" in disagreed.stdout
    assert parcels[0] not in disagreed.stdout and parcels[2] not in disagreed.stdout
    server.shutdown()
    command.close()
