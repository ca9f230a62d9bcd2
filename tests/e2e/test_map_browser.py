"""The customer's map page in real headless Chromium (Debian's, installed by ``make browser``),
driven by Playwright: the page loads Leaflet from the service, opens the tracking stream, and the
vehicle marker moves when the fleet simulator's pings are posted. A screenshot is saved to
``test-artifacts/``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from meridian.embedded.identity import LocalIdentityIssuer
from meridian.sim import Fleet, HttpSink, SimOptions
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
    sink = HttpSink(services.url("command"), lambda _: issuer.token("drv-sim", "driver"))
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


def test_the_customer_map_moves_the_marker_as_pings_arrive(services: Services) -> None:
    from playwright.sync_api import sync_playwright

    delivery = out_for_delivery(services)
    url = f"{services.url('live-map')}/map?parcel={delivery.parcel_id}#token={delivery.token}"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ],
        )
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

            simulate(services, delivery.vehicle_id, steps=3)
            page.wait_for_function(
                f"window.meridianMap.vehicle.recorded_at !== {first['recorded_at']!r}",
                timeout=20_000,
            )
            moved = page.evaluate("window.meridianMap.vehicle")
            assert (moved["lat"], moved["lng"]) != (first["lat"], first["lng"])
            assert page.get_attribute("path.vehicle-marker", "d") != first_path  # drawn elsewhere
            page.screenshot(path=str(ARTIFACTS / "customer-map.png"))
            assert errors == []
        finally:
            browser.close()
