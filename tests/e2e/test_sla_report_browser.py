"""The SLA report's HTML in real headless Chromium (Debian's, via Playwright, as
tests/e2e/test_map_browser.py): a simulated day's report opens offline, draws its four charts
with a bar per client-day (and per breach cause), and is saved as a screenshot in
``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian.app.sla_report import sla_report
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.runtime.report_cli import as_html
from tests.e2e.test_map_browser import ARTIFACTS, BROWSER_ARGS, CHROMIUM
from tests.integration.test_sla_report import ARCHIVE, CODEC, DAY, archive, simulate_day

pytestmark = pytest.mark.e2e


def test_the_html_report_draws_its_charts(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _, events = simulate_day(n=400)
    warehouse = EmbeddedWarehouse(tmp_path)
    archive(warehouse, events)
    report = sla_report(warehouse, ARCHIVE, CODEC, DAY, DAY)
    page_file = tmp_path / "sla.html"
    page_file.write_text(as_html(report))
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_file.as_uri())
            assert page.locator("svg.chart").count() == 4
            for chart in ("on-time", "first-attempt", "eta-error"):
                assert page.locator(f"svg.{chart} rect.bar").count() == len(report.daily)
            causes = {b.cause for b in report.breaches}
            assert page.locator("svg.causes rect.bar").count() == len(causes) > 0
            widest = page.locator("svg.on-time rect.bar").first.bounding_box()
            assert widest is not None and widest["width"] > 100  # drawn, not collapsed
            assert page.locator("#daily tbody tr").count() == len(report.daily)
            page.screenshot(path=str(ARTIFACTS / "sla-report.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
