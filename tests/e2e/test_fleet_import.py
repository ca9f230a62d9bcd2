"""The dispatch desk's fleet over real processes (#22 item 1): `meridian fleet import` loads a CSV
into a `meridian up` of the platform and the command service, through the API with a dispatcher
token minted from the data dir; the fleet reads back from the API, and a broken row is reported
with a non-zero exit. A geofence registered through the API is what the geofence job loads."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from pipelines.geofence.loaders import StoreFences
from tests.e2e.conftest import MERIDIAN, ROOT, Runtime, free_port_block, start_runtime, stop_runtime

pytestmark = pytest.mark.e2e
SERVICES = ("platform", "command")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(tmp_path_factory.mktemp("fleet")),
        "MERIDIAN_BASE_PORT": str(free_port_block()),
        "MERIDIAN_HOST": "127.0.0.1",
        "MERIDIAN_SERVICES": ",".join(SERVICES),
        "PYTHONPATH": str(ROOT),
    }
    runtime = start_runtime(env, SERVICES)
    yield runtime
    stop_runtime(runtime)


def _meridian(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(runtime.data_dir),
        "MERIDIAN_BASE_PORT": str(runtime.base_port),
        "MERIDIAN_HOST": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [*MERIDIAN, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _desk(runtime: Runtime) -> httpx.Client:
    token = LocalIdentityIssuer(runtime.data_dir).token("dsp-e2e", "dispatcher")
    return httpx.Client(
        base_url=runtime.url("command"), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_a_fleet_csv_imports_and_reads_back(runtime: Runtime, tmp_path: Path) -> None:
    suffix = os.urandom(3).hex()
    example = list(csv.DictReader((ROOT / "examples" / "fleet.csv").open()))
    for row in example:
        row["id"] = f"{row['id']}-{suffix}"
    path = tmp_path / "fleet.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(example[0]))
        writer.writeheader()
        writer.writerows(example)

    done = _meridian(runtime, "fleet", "import", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported 3 drivers, 3 vehicles; 0 of 6 rows failed" in done.stdout

    with _desk(runtime) as desk:
        drivers = desk.get("/v1/drivers", params={"limit": 500}).json()["drivers"]
        vehicles = desk.get("/v1/vehicles", params={"limit": 500}).json()["vehicles"]
        mine = {d["driver_id"]: d for d in drivers if d["driver_id"].endswith(suffix)}
        assert set(mine) == {f"drv-{n}-{suffix}" for n in ("asha", "bilal", "chitra")}
        assert mine[f"drv-chitra-{suffix}"]["status"] == "OFF_DUTY"
        van = desk.get(f"/v1/vehicles/veh-01-{suffix}").json()
        assert van["shift"] == {"start": "06:00", "end": "14:00"}
        assert van["depot"] == {"lat": 12.9716, "lng": 77.5946}
        assert len([v for v in vehicles if v["vehicle_id"].endswith(suffix)]) == 3

    # the same file again: answered as the first time, nothing twice
    again = _meridian(runtime, "fleet", "import", str(path))
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_broken_row_is_reported_and_fails_the_import(runtime: Runtime, tmp_path: Path) -> None:
    suffix = os.urandom(3).hex()
    path = tmp_path / "broken.csv"
    path.write_text(
        "kind,id,name,phone,capacity_kg,capacity_parcels,depot_lat,depot_lng\n"
        f"driver,drv-ok-{suffix},Asha,+919800000001,,,,\n"
        f"driver,drv-bad-{suffix},Bilal,12345,,,,\n"
        f"vehicle,veh-bad-{suffix},,,500,40,12.97,\n"
    )
    done = _meridian(runtime, "fleet", "import", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "imported 1 drivers, 0 vehicles; 2 of 3 rows failed" in done.stdout
    report = [line for line in done.stderr.splitlines() if "│" in line]
    assert any("│ 3 " in line and "phone" in line for line in report), done.stderr
    assert any("│ 4 " in line and "depot_lng" in line for line in report), done.stderr


def test_a_geofence_from_the_api_is_what_the_geofence_job_loads(runtime: Runtime) -> None:
    fence_id = f"yard-{os.urandom(3).hex()}"
    square = [[77.59, 12.97], [77.60, 12.97], [77.60, 12.98], [77.59, 12.98], [77.59, 12.97]]
    with _desk(runtime) as desk:
        created = desk.post(
            "/v1/geofences",
            json={
                "fence_id": fence_id,
                "name": "Yard",
                "geometry": {"type": "Polygon", "coordinates": [square]},
                "margin_m": 10,
            },
            headers={"Idempotency-Key": fence_id},
        )
        assert created.status_code == 201, created.text
        bowtie = [[77.59, 12.97], [77.60, 12.98], [77.60, 12.97], [77.59, 12.98], [77.59, 12.97]]
        refused = desk.patch(
            f"/v1/geofences/{fence_id}",
            json={"geometry": {"type": "Polygon", "coordinates": [bowtie]}},
        )
        assert refused.status_code == 422
        assert "Self-intersection" in refused.json()["detail"]
    loaded = StoreFences(lambda: all_stores(runtime.data_dir)).fences()
    [fence] = [f for f in loaded if f.fence_id == fence_id]
    assert fence.margin_m == 10
    assert fence.geometry.bounds == pytest.approx((77.59, 12.97, 77.60, 12.98))
