# ruff: noqa: F811 - the fixtures are imported from tests/e2e/test_sync_bridge.py
"""The migration bridge converges when Meridian wins (#21), end to end over meridian up's processes
and a real PostgreSQL: Meridian delivers, the legacy writer writes DELIVERED into the monolith,
then the monolith, not knowing, records a failed attempt. The sync apply keeps DELIVERED in
Meridian (rule final-state) and writes it back into the monolith's row as the bridge's
(services/sync/apply.py, ``write_back``), so the two sides agree again. About 30 s.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from tests.e2e.conftest import eventually
from tests.e2e.test_sync_bridge import (  # noqa: F401 - fixtures
    PULL_S,
    Bridge,
    Shipment,
    bridge,
    monolith,
    monolith_dsn,
    parcel_row,
    shipment,
)


def test_when_meridian_wins_the_status_the_monolith_follows(
    bridge: Bridge, shipment: Shipment
) -> None:
    parcel, driver = shipment.parcels[1], f"drv-{os.urandom(3).hex()}"
    driver_app = bridge.token(driver, "driver")
    assign = {
        "route_id": f"r-{parcel}",
        "driver_id": driver,
        "vehicle_id": "veh-3",
        "stop_sequence": 0,
    }
    bridge.move(parcel, "assign", assign, shipment.client.dispatcher)
    bridge.move(
        parcel,
        "out-for-delivery",
        {"vehicle_id": "veh-3", "at": datetime.now(UTC).isoformat()},
        driver_app,
    )
    delivered = {
        "vehicle_id": "veh-3",
        "delivered_at": datetime.now(UTC).isoformat(),
        "position": {"lat": 12.97, "lng": 77.59},
        "pod": {"signature_ref": f"sig-{parcel}"},
    }
    bridge.move(parcel, "deliver", delivered, driver_app)
    eventually(lambda: parcel_row(bridge.dsn, parcel)["status"] == "DELIVERED", 30, what="push")
    # the monolith, not knowing, records a failed attempt on the same parcel
    monolith(
        bridge.dsn,
        "UPDATE parcels SET status = 'DELIVERY_FAILED', failure_reason = 'nobody home',"
        " attempts = 1 WHERE id = %s",
        (parcel,),
    )
    version = parcel_row(bridge.dsn, parcel)["version"]
    eventually(
        lambda: bridge.link(parcel)["legacy_version"] == version,  # type: ignore[index]
        timeout_s=PULL_S + 60,
        what="the monolith's edit applied",
    )
    assert bridge.parcel(parcel)["status"] == "DELIVERED"  # type: ignore[index]  # final-state
    eventually(
        lambda: parcel_row(bridge.dsn, parcel)["status"] == "DELIVERED",
        timeout_s=30,
        what="Meridian's winning status back in the monolith",
    )
