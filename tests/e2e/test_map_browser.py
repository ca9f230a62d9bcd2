"""The map pages in real headless Chromium (Debian's, installed by ``make browser``), driven by
Playwright: the customer page loads Leaflet from the service, opens the tracking stream, and the
vehicle marker moves when the fleet simulator's pings are posted; the dispatcher page draws the
geofences and route boards as they are written. Screenshots are saved to ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.runtime.sim import Fleet, HttpSink, SimOptions
from tests.e2e.conftest import ROOT
from tests.e2e.test_live_map import Services, out_for_delivery, start_services, stop_services

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = start_services(tmp_path_factory.mktemp("map-browser"))
    yield services
    stop_services(services)


def simulate(services: Services, vehicle_id: str, steps: int) -> list[dict[str, Any]]:
    """Drive one simulated vehicle (the parcel's) for a few pings; returns what was posted."""
    fleet = Fleet(SimOptions(vehicles=1, duplicate_rate=0, late_rate=0, reorder_rate=0, seed=3))
    fleet.vehicles[0].vehicle_id = vehicle_id
    fleet.vehicles[0].cruise_mps = 30.0  # fast, so each ping is visibly elsewhere on the map
    issuer = LocalIdentityIssuer(services.data_dir)
    # The simulator stands in for a fleet gateway, which may report any vehicle.
    sink = HttpSink(services.url("command"), lambda _: issuer.token("gw-sim", "gateway"))
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        for step in range(1, steps + 1):
            pings = fleet.advance(step * 5.0, datetime.now(UTC))
            assert await sink.send(pings) == len(pings)
            sent.extend(pings)
        await sink.close()

    # Playwright's sync API runs its own event loop in this thread, so the sink runs in another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
    return sent


BROWSER_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]


def test_the_customer_map_moves_the_marker_as_pings_arrive(services: Services) -> None:
    from playwright.sync_api import sync_playwright

    delivery = out_for_delivery(services)
    url = f"{services.url('live-map')}/map?parcel={delivery.parcel_id}#token={delivery.token}"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 650})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function(
                "window.L !== undefined && window.meridianMap.status === 'OUT_FOR_DELIVERY'"
            )
            assert page.text_content("#status") == "out for delivery"

            simulate(services, delivery.vehicle_id, steps=1)
            page.wait_for_function("window.meridianMap.vehicle !== null", timeout=20_000)
            first = page.evaluate("window.meridianMap.vehicle")
            first_path = page.get_attribute("path.vehicle-marker", "d")

            # A fresh simulated fleet pings first where the last one did: that ping (newer, same
            # place) may be written on its own when it opens a debounce interval, and the next
            # ones at the interval's end. So wait for the marker to be elsewhere, not for any
            # newer ping.
            simulate(services, delivery.vehicle_id, steps=3)
            page.wait_for_function(
                f"window.meridianMap.vehicle.lat !== {first['lat']!r}"
                f" || window.meridianMap.vehicle.lng !== {first['lng']!r}",
                timeout=20_000,
            )
            moved = page.evaluate("window.meridianMap.vehicle")
            assert moved["recorded_at"] != first["recorded_at"]
            assert page.get_attribute("path.vehicle-marker", "d") != first_path  # drawn elsewhere
            page.screenshot(path=str(ARTIFACTS / "customer-map.png"))
            assert errors == []
        finally:
            browser.close()


def test_the_dispatcher_map_draws_geofences_and_routes_as_they_are_written(
    services: Services,
) -> None:
    from playwright.sync_api import sync_playwright

    store = all_stores(services.data_dir)
    square = [[77.58, 12.96], [77.60, 12.96], [77.60, 12.98], [77.58, 12.98], [77.58, 12.96]]
    store.set(
        "geofences/depot",
        {"name": "Depot", "geometry": json.dumps({"type": "Polygon", "coordinates": [square]})},
    )
    now = datetime.now(UTC)
    # What the ETA reactor projects for a route (written here: the reactor is not running).
    store.set(
        "route_board/r-browser",
        {
            "vehicle_id": "veh-browser",
            "position": {"lat": 12.95, "lng": 77.57},
            "stops": {
                f"p-{i}": {
                    "parcel_id": f"p-{i}",
                    "sequence": i,
                    "lat": 12.96 + i / 100,
                    "lng": 77.58 + i / 100,
                    "status": "pending",
                    "eta": now + timedelta(minutes=10 * (i + 1)),
                }
                for i in range(3)
            },
        },
    )
    token = LocalIdentityIssuer(services.data_dir).token("dsp-browser", "dispatcher")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 650})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{services.url('live-map')}/dispatch#token={token}")
            page.wait_for_function(
                "window.meridianMap.fences && window.meridianMap.fences.depot !== undefined"
                " && window.meridianMap.routes['r-browser'] !== undefined",
                timeout=20_000,
            )
            assert page.text_content("#overlays") == "1 geofences · 1 routes"
            # A fence added while the page is open is drawn too (listener-driven, not a reload).
            store.set(
                "geofences/yard",
                {
                    "name": "Yard",
                    "geometry": json.dumps({"type": "Point", "coordinates": [77.62, 12.99]}),
                    "radius_m": 300,
                },
            )
            page.wait_for_function("window.meridianMap.fences.yard !== undefined", timeout=20_000)
            # Polygon, circle, route line and three stops are all SVG paths on the overlay pane.
            assert page.locator(".leaflet-overlay-pane path").count() >= 6
            page.screenshot(path=str(ARTIFACTS / "dispatch-map.png"))
            assert errors == []
        finally:
            browser.close()
    store.close()
