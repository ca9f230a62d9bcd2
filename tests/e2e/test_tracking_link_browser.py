"""The tracking link a customer is texted, opened in real headless Chromium (Debian's, installed by
``make browser``): a parcel sent out through the command API reaches the notification reactor
(through the event publisher and Pub/Sub push), whose SMS the gateway stand-in keeps; the link in
that text, opened as it is, shows the parcel and its vehicle on the live map, and its token reaches
the live map only as a bearer credential, never in a URL. The screenshot is saved to
``test-artifacts/``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.conftest import eventually
from tests.e2e.test_live_map import Services, out_for_delivery, start_services, stop_services
from tests.e2e.test_map_browser import ARTIFACTS, BROWSER_ARGS, CHROMIUM, simulate

pytestmark = pytest.mark.e2e
# The platform (Eventarc and Pub/Sub push), and what a parcel's text goes through to the map.
SERVICES = ("platform", "sms-gateway", "command", "event-publisher", "notification", "live-map")
# The vehicle is seen: the map has framed it with the stop (its zoom animation is over) and its
# marker is drawn inside the window.
SETTLED_IN_VIEW = """() => {
  const marker = document.querySelector("path.vehicle-marker");
  if (!marker || document.querySelector(".leaflet-zoom-anim")) return false;
  const box = marker.getBoundingClientRect();
  return box.width > 0 && box.left >= 0 && box.top >= 0
    && box.right <= window.innerWidth && box.bottom <= window.innerHeight;
}"""


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = start_services(tmp_path_factory.mktemp("tracking-link"), SERVICES)
    yield services
    stop_services(services)


def texted_link(services: Services, parcel_id: str) -> str:
    """The link in the out-for-delivery SMS the gateway stand-in received for ``parcel_id``."""

    def texts() -> list[str]:
        sent = httpx.get(f"{services.url('sms-gateway')}/v1/messages", timeout=5).json()
        return [m["body"] for m in sent if parcel_id in m["body"]]

    (body,) = eventually(texts, timeout_s=30, what="the out-for-delivery SMS")
    links = re.findall(r"https?://\S+", body)
    assert len(links) == 1, body
    return links[0]


def test_the_texted_link_opens_the_customer_map_with_the_parcels_vehicle(
    services: Services,
) -> None:
    from playwright.sync_api import Request, sync_playwright

    delivery = out_for_delivery(services)
    link = texted_link(services, delivery.parcel_id)
    assert link.startswith(f"{services.url('live-map')}/map?")
    token = parse_qs(urlsplit(link).fragment)["token"][0]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 650})
            errors: list[str] = []
            requested: list[Request] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda request: requested.append(request))
            page.goto(link)
            page.wait_for_function(
                "window.L !== undefined && window.meridianMap.status === 'OUT_FOR_DELIVERY'"
            )
            assert page.text_content("#status") == "out for delivery"

            sent = simulate(services, delivery.vehicle_id, steps=1)
            page.wait_for_function("window.meridianMap.vehicle !== null", timeout=20_000)
            vehicle = page.evaluate("window.meridianMap.vehicle")
            assert (vehicle["lat"], vehicle["lng"]) in {
                (p["position"]["lat"], p["position"]["lng"]) for p in sent
            }
            assert page.locator("path.vehicle-marker").count() == 1
            page.wait_for_function(SETTLED_IN_VIEW, timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "tracking-link.png"))
            assert errors == []
            # The token reached the live map only as a bearer credential, never in a URL.
            assert page.evaluate("location.href") == link
            assert requested and all(token not in request.url for request in requested)
            streams = [r for r in requested if r.url.endswith(f"/v1/track/{delivery.parcel_id}")]
            assert streams and all(
                r.all_headers()["authorization"] == f"Bearer {token}" for r in streams
            )
        finally:
            browser.close()
