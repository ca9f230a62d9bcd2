"""The wheel is complete, and a service runs from it as the service image runs it.

No Docker engine runs here, so this test does what the root ``Dockerfile`` does, the same way:
build the wheel, install it with the locked dependencies (no dev group, no pipeline extra) into a
fresh virtual environment outside the checkout, and run ``meridian serve SERVICE`` with ``PORT``
set. Every process runs in ``tmp_path`` with a clean environment (no ``PYTHONPATH``) and Python's
isolated mode where it is ours to start, so the checkout is not on ``sys.path``: the catalog, the
Avro schemas, the workflows, the live map's assets and Swagger UI's must come from the installed
package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, eventually, free_port_block

pytestmark = pytest.mark.e2e


def uv() -> str:
    """The Makefile's uv: from PATH, else the pinned copy ``make env`` puts in .tools/."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv not found: run `make env`"
    return found


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stderr}"
    return done.stdout


def clean_environment(home: Path, **extra: str) -> dict[str, str]:
    """A process environment with nothing of this one's Python or Meridian settings in it."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONSAFEPATH": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment outside the checkout with the wheel and the service dependencies."""
    tmp = tmp_path_factory.mktemp("installed-wheel")
    run(uv(), "build", "--wheel", "--out-dir", tmp / "dist", cwd=ROOT)
    (wheel,) = (tmp / "dist").glob("meridian-*.whl")
    requirements = tmp / "requirements.txt"
    run(
        uv(), "export", "--quiet", "--locked", "--no-dev", "--no-emit-project", "--no-hashes",
        "--output-file", requirements, cwd=ROOT,
    )  # fmt: skip
    venv = tmp / "venv"
    run(uv(), "venv", "--quiet", "--python", sys.executable, venv, cwd=tmp)
    run(
        uv(), "pip", "install", "--quiet", "--python", venv / "bin" / "python",
        "--requirement", requirements, wheel, cwd=tmp,
    )  # fmt: skip
    return venv


PROBE = """
import importlib.util, json
import meridian
from meridian.catalog import DEFAULT_CATALOG, load_catalog
from meridian.resources import workflows_directory
from meridian.edge.api_docs import SWAGGER_UI, VENDORED
from services.live_map.bootstrap import LEAFLET
catalog = load_catalog()
print(json.dumps({
    "meridian": meridian.__file__,
    "catalog": str(catalog.path),
    "schema": str(catalog.schema_path("ParcelDelivered")),
    "event_types": len(catalog.event_types),
    "workflows": sorted(p.name for p in workflows_directory().glob("*.yaml")),
    "leaflet": (LEAFLET / "leaflet.js").is_file() and (LEAFLET / "LICENSE").is_file(),
    "swagger": str(SWAGGER_UI),
    "swagger_files": sorted(p.name for p in SWAGGER_UI.iterdir() if p.name in VENDORED),
    "swagger_vendored": sorted(VENDORED),
    "beam": importlib.util.find_spec("apache_beam") is not None,
}))
"""


def test_the_installed_wheel_has_its_data_and_no_beam(venv: Path, tmp_path: Path) -> None:
    import json

    out = run(venv / "bin" / "python", "-I", "-c", PROBE, cwd=tmp_path)
    found = json.loads(out)
    site = venv.resolve()
    for key in ("meridian", "catalog", "schema"):
        assert Path(found[key]).resolve().is_relative_to(site), f"{key} from {found[key]}"
    assert found["event_types"] >= 20
    assert "dispatch.yaml" in found["workflows"]
    assert "sync.yaml" in found["workflows"]
    assert found["leaflet"] is True
    assert Path(found["swagger"]).resolve().is_relative_to(site)
    assert found["swagger_files"] == found["swagger_vendored"]  # LICENSE and NOTICE among them
    assert found["beam"] is False  # the service image's dependencies: Beam is the pipeline's


@pytest.fixture
def served(venv: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``meridian serve`` of the command service and the live map from the installed wheel, as
    the image's entrypoint runs them (embedded backend: no Google project here)."""
    base = free_port_block(2)
    children: dict[str, subprocess.Popen[bytes]] = {}
    urls = {}
    for offset, service in enumerate(("command", "live-map")):
        env = clean_environment(
            tmp_path,
            PORT=str(base + offset),
            MERIDIAN_HOST="127.0.0.1",
            MERIDIAN_DATA_DIR=str(tmp_path / "data"),
        )
        log = (tmp_path / f"{service}.log").open("wb")
        children[service] = subprocess.Popen(
            [str(venv / "bin" / "meridian"), "serve", service],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        urls[service] = f"http://127.0.0.1:{base + offset}"
    try:
        yield urls
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_service_serves_from_the_installed_wheel(served: dict[str, str], tmp_path: Path) -> None:
    for service, url in served.items():
        eventually(
            lambda url=url: _healthy(url),
            timeout_s=30,
            what=f"{service} from the installed wheel (see {tmp_path}/{service}.log)",
        )
    live_map = served["live-map"]
    page = httpx.get(f"{live_map}/map", timeout=5)
    assert page.status_code == 200 and "/assets/leaflet/leaflet.js" in page.text
    leaflet = httpx.get(f"{live_map}/assets/leaflet/leaflet.js", timeout=5)
    assert leaflet.status_code == 200 and "Leaflet 1.9.4" in leaflet.text
    command = served["command"]
    docs = httpx.get(f"{command}/docs", timeout=5)
    assert docs.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in docs.text
    bundle = httpx.get(f"{command}/docs/assets/swagger-ui-bundle.js", timeout=5)
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text


def test_a_cloud_run_job_runs_from_the_installed_wheel(
    venv: Path, tmp_path: Path, legacy_dsn: str
) -> None:
    """The migration bridge's jobs run as ``meridian job run NAME`` from the image (Terraform's
    Cloud Run Jobs, the Workflows connector): the scheduled pull, from the installed wheel, over a
    real PostgreSQL, publishes the monolith's change and moves its cursor."""
    import psycopg

    from meridian.catalog import load_catalog
    from meridian.config import Settings
    from meridian.runtime.platform import prepare_data_dir

    with psycopg.connect(legacy_dsn) as conn:
        conn.execute("INSERT INTO clients (id, name) VALUES ('c-wheel', 'Wheel Retail')")
    # The topics and subscriptions, as meridian up makes them (Terraform, on Google Cloud).
    prepare_data_dir(load_catalog(), Settings(data_dir=tmp_path / "data"))
    env = clean_environment(
        tmp_path, MERIDIAN_DATA_DIR=str(tmp_path / "data"), MERIDIAN_LEGACY_DSN=legacy_dsn
    )
    meridian = str(venv / "bin" / "meridian")
    unknown = subprocess.run(
        [meridian, "job", "run", "nope"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "sync-pull" in unknown.stderr
    pulled = subprocess.run(
        [meridian, "job", "run", "sync-pull"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pulled.returncode == 0, pulled.stderr
    with psycopg.connect(legacy_dsn) as conn:
        cursor = conn.execute("SELECT id FROM bridge_cursors WHERE entity = 'clients'").fetchone()
    assert cursor == ("c-wheel",)
