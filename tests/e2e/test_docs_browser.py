"""The command service's ``/docs`` in real headless Chromium (Debian's, installed by ``make
browser``), driven by Playwright, with no network (#23 item 3): every request the page makes to
anywhere but the service on 127.0.0.1 is refused, and Swagger UI still renders the operations list
from the files vendored in the package (``meridian.edge.api_docs``). A screenshot is saved to
``test-artifacts/``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MERIDIAN, ROOT, eventually, free_port_block
from tests.e2e.test_map_browser import ARTIFACTS, BROWSER_ARGS, CHROMIUM

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def command(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``meridian serve command`` on a free loopback port, on the embedded backend."""
    tmp: Path = tmp_path_factory.mktemp("docs-browser")
    port = free_port_block(1)
    env = {
        **os.environ,
        "PORT": str(port),
        "MERIDIAN_HOST": "127.0.0.1",
        "MERIDIAN_DATA_DIR": str(tmp / "data"),
        "PYTHONPATH": str(ROOT),
    }
    with (tmp / "command.log").open("wb") as log:
        child = subprocess.Popen(
            [*MERIDIAN, "serve", "command"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(healthy, timeout_s=30, what=f"the command service (see {tmp}/command.log)")
        yield url
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def test_the_docs_page_renders_the_operations_with_no_network(command: str) -> None:
    from playwright.sync_api import Route, sync_playwright

    refused: list[str] = []
    served: list[str] = []

    def only_the_service(route: Route) -> None:
        url = route.request.url
        if url.startswith(f"{command}/"):
            served.append(url.removeprefix(command))
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            context.route("**/*", only_the_service)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{command}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            summaries = page.locator(".opblock .opblock-summary-path").all_text_contents()
            # Swagger UI breaks long paths with zero-width spaces.
            paths = {text.replace("\u200b", "") for text in summaries}
            assert "/v1/parcels/{parcel_id}:deliver" in paths
            assert {"/v1/shipments", "/v1/telemetry", "/v1/dispatch-windows"} <= paths
            assert page.locator(".opblock-post").count() >= 10
            page.screenshot(path=str(ARTIFACTS / "command-docs.png"), full_page=False)
            assert errors == []
        finally:
            browser.close()
    assert refused == [], f"the page asked the network for {refused}"
    assert "/docs/assets/swagger-ui-bundle.js" in served and "/openapi.json" in served


def test_the_redoc_page_renders_the_reference_with_no_network(command: str) -> None:
    from playwright.sync_api import Route, sync_playwright

    refused: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(f"{command}/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            context.route("**/*", only_the_service)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{command}/redoc")
            # Polled from here: wait_for_function evaluates its predicate in the page with
            # eval, which the page's Content Security Policy (no 'unsafe-eval') refuses.
            page.locator("body", has_text="/v1/parcels/{parcel_id}:deliver").wait_for(
                timeout=30_000
            )
            text = page.inner_text("body")
            assert "/v1/telemetry" in text and "/v1/dispatch-windows" in text
            page.screenshot(path=str(ARTIFACTS / "command-redoc.png"), full_page=False)
            assert errors == []
        finally:
            browser.close()
    assert refused == [], f"the page asked the network for {refused}"
