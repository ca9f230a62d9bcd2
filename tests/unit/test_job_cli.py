"""``meridian job run NAME EVENT``: runs ``services.sync.jobs.JOBS[NAME]`` on the event with the
settings and exits with its status; an unknown job names the known ones; a domain error is one
line and status 1."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from meridian.config import Settings
from meridian.domain.errors import NotFound
from meridian.runtime.cli import app

seen: list[tuple[str, Settings]] = []


def _ok(event: str, settings: Settings) -> int:
    seen.append((event, settings))
    return 0


def _differs(event: str, settings: Settings) -> int:
    return 3


def _missing(event: str, settings: Settings) -> int:
    raise NotFound("no shipment s-1 in the monolith")


@pytest.fixture(autouse=True)
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("services.sync.jobs")
    module.JOBS = {"sync-shipments": _ok, "reconcile": _differs, "sync-identities": _missing}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "services.sync.jobs", module)
    seen.clear()
    yield


def test_the_job_gets_the_event_and_the_settings() -> None:
    result = CliRunner().invoke(app, ["job", "run", "sync-shipments", "ZXZlbnQ="])
    assert result.exit_code == 0, result.output
    ((event, settings),) = seen
    assert event == "ZXZlbnQ="
    assert isinstance(settings, Settings)


def test_the_jobs_status_is_the_exit_status() -> None:
    assert CliRunner().invoke(app, ["job", "run", "reconcile", "e"]).exit_code == 3


def test_an_unknown_job_lists_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["job", "run", "sync-everything", "e"])
    assert result.exit_code == 2
    assert "no job 'sync-everything'; one of: reconcile, sync-identities, sync-shipments" in (
        result.output
    )


def test_a_domain_error_is_one_line_and_status_1() -> None:
    result = CliRunner().invoke(app, ["job", "run", "sync-identities", "e"])
    assert result.exit_code == 1
    assert result.output.strip() == "sync-identities failed: no shipment s-1 in the monolith"


def test_a_scheduled_job_runs_without_an_event() -> None:
    result = CliRunner().invoke(app, ["job", "run", "sync-shipments"])
    assert result.exit_code == 0, result.output
    assert seen[0][0] == ""
