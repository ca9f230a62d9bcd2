"""``meridian fleet import`` (#22 item 1): a CSV of drivers and vehicles posted through the command
service's API (here its ASGI app on fakes), every failed row reported by row, column and message,
a re-run of the same file answered as the first time, and exit 1 when any row failed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meridian.runtime import fleet_cli
from meridian.runtime.fleet_cli import CsvError, RowError, import_rows, read_rows
from services.command.app import create_app
from services.command.handlers import Deps
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.unit.test_command_service import CODEC, NOW, FakeVerifier

ROOT = Path(__file__).resolve().parents[2]
HEADER = fleet_cli.COLUMNS


@pytest.fixture
def store() -> FakeDocumentStore:
    return FakeDocumentStore(clock=lambda: NOW)


@pytest.fixture
def desk(store: FakeDocumentStore) -> TestClient:
    deps = Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW)
    return TestClient(
        create_app(deps, FakeVerifier()), headers={"Authorization": "Bearer dispatcher:dsp-1"}
    )


def _csv(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "fleet.csv"
    path.write_text("\n".join([",".join(HEADER), *rows]) + "\n")
    return path


def test_the_example_fleet_imports_whole(desk: TestClient, store: FakeDocumentStore) -> None:
    report = import_rows(desk, read_rows(ROOT / "examples" / "fleet.csv"))
    assert report.errors == []
    assert report.imported == {"driver": 3, "vehicle": 3}
    vehicle = store.get("vehicles/veh-01")
    assert vehicle is not None
    assert vehicle.data["depot"] == {"lat": 12.9716, "lng": 77.5946}
    assert vehicle.data["shift"] == {"start": "06:00", "end": "14:00"}
    assert (vehicle.data["capacity_kg"], vehicle.data["capacity_parcels"]) == (500.0, 40)
    driver = store.get("drivers/drv-chitra")
    assert driver is not None and driver.data["status"] == "OFF_DUTY"


def test_each_failed_row_is_reported_by_row_column_and_message(
    desk: TestClient, store: FakeDocumentStore, tmp_path: Path
) -> None:
    path = _csv(
        tmp_path,
        "driver,drv-1,Asha,+919800000001,,,,,,,",  # row 2: fine
        "driver,drv-2,Bilal,98000,,,,,,,",  # row 3: not E.164
        "vehicle,veh-1,,,,heavy,40,12.97,200,,",  # row 4: two fields
        "truck,t-1,,,,,,,,,",  # row 5: no such kind
        "driver,drv-3,Chitra,+919800000003,,500,,,,,",  # row 6: a driver has no capacity
        ",,,,,,,,,,",  # blank: skipped
        "vehicle,veh-2,,,,500,40,12.97,77.59,06:00,06:00",  # row 8: an empty shift
        "driver,drv-1,Asha,+919800000009,,,,,,,",  # row 9: drv-1 exists
    )
    report = import_rows(desk, read_rows(path))
    assert report.imported == {"driver": 1, "vehicle": 0}
    assert [(e.row, e.field) for e in report.errors] == [
        (3, "phone"),
        (4, "capacity_kg"),
        (4, "depot_lng"),
        (5, "kind"),
        (6, "capacity_kg"),
        (8, "shift"),
        (9, "row"),
    ]
    assert report.errors[3] == RowError(5, "kind", "is truck; one of driver, vehicle")
    assert "already exists" in report.errors[-1].message
    assert report.failed_rows == 6
    assert store.get("drivers/drv-2") is None


def test_importing_the_same_file_again_changes_nothing(
    desk: TestClient, store: FakeDocumentStore
) -> None:
    rows = read_rows(ROOT / "examples" / "fleet.csv")
    import_rows(desk, rows)
    again = import_rows(desk, rows)
    assert again.errors == [] and again.imported == {"driver": 3, "vehicle": 3}


def test_a_file_it_cannot_read_is_a_usage_error(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("kind,id,colour\n")
    with pytest.raises(CsvError, match="unknown columns colour"):
        read_rows(unknown)
    result = CliRunner().invoke(fleet_cli.app, ["import", str(unknown), "--token", "t"])
    assert result.exit_code == 2
    assert "unknown columns colour" in result.stderr


def test_the_command_exits_1_naming_the_failed_rows(
    desk: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _csv(tmp_path, "driver,drv-1,Asha,+919800000001,,,,,,,", "driver,drv-2,B,1,,,,,,,")
    monkeypatch.setattr(fleet_cli.httpx, "Client", lambda **kwargs: desk)
    result = CliRunner().invoke(fleet_cli.app, ["import", str(path), "--token", "t"])
    assert result.exit_code == 1, result.output
    assert "imported 1 drivers, 0 vehicles; 1 of 2 rows failed" in result.stdout
    assert "phone" in result.stderr and "│ 3 " in result.stderr
