"""Each service's ``/docs``: Swagger UI from the files vendored in the package, nothing from a CDN
(#23 item 3), and those files are npm's ``swagger-ui-dist`` at the version package.json pins.
The page rendered in a browser with no network: tests/e2e/test_docs_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from meridian.config import Settings
from meridian.edge.api_docs import REDOC, REDOC_VENDORED, REDOC_VERSION, SWAGGER_UI, VENDORED
from tests.unit.test_unauthenticated_route_walk import SERVICES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("docs"))


@pytest.mark.parametrize(
    "service", ["command", "dispatch", "live-map", "event-publisher", "billing", "eta"]
)
def test_docs_are_served_from_the_package(service: str, settings: Settings) -> None:
    app: FastAPI = SERVICES[service](settings)
    client = TestClient(app)
    page = client.get("/docs")
    assert page.status_code == 200
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(
        r"url: '([^']+)'", page.text
    )
    assert sorted(loaded) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    ]
    assert '"validatorUrl": null' in page.text  # not sent to validator.swagger.io
    for url in loaded:
        assert client.get(url).status_code == 200, url
    redoc = client.get("/redoc")  # ReDoc from the package, not FastAPI's CDN page
    assert redoc.status_code == 200
    loaded = sorted(re.findall(r'(?:src|href|spec-url)="([^"]+)"', redoc.text))
    assert loaded == [
        "/docs/assets/favicon-32x32.png",
        "/openapi.json",
        "/redoc/assets/redoc.standalone.js",
    ], loaded
    assert "fonts.googleapis.com" not in redoc.text
    for url in loaded:
        assert client.get(url).status_code == 200, url
    missing = client.get("/docs/assets/nothing.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_redoc_is_the_standalone_bundle_with_its_licences() -> None:
    for name in REDOC_VENDORED:
        assert (REDOC / name).is_file(), name
    bundle = (REDOC / "redoc.standalone.js").read_text(errors="replace")
    assert f'"{REDOC_VERSION}"' in bundle or f"v{REDOC_VERSION}" in bundle, (
        f"the vendored bundle is not ReDoc {REDOC_VERSION}"
    )


def test_the_vendored_files_are_the_pinned_swagger_ui() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["swagger-ui-dist"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin swagger-ui-dist exactly"
    for name in VENDORED:
        assert (SWAGGER_UI / name).is_file(), name
    installed = ROOT / "node_modules" / "swagger-ui-dist"
    if not installed.is_dir():
        pytest.skip("node_modules/swagger-ui-dist is not installed (make node)")
    version = json.loads((installed / "package.json").read_text())["version"]
    assert version == pinned, "make node: node_modules holds another swagger-ui-dist"
    stale = [n for n in VENDORED if (installed / n).read_bytes() != (SWAGGER_UI / n).read_bytes()]
    assert not stale, f"python -m meridian.edge.api_docs: {stale} differ from npm's"
