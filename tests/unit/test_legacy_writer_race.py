"""The legacy writer over a monolith edit the pull has published but the sync jobs have not
applied yet (services/sync/writer/handlers.py, ``_in_meridian``): the pull's cursor has passed
the row, but the apply re-reads only ``written_by = 'monolith'`` rows within its page, so the
write must keep the row the monolith's until Meridian's link holds its version. And each event
written is observed in ``meridian_sync_lag_seconds{direction="to_monolith"}`` once committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from meridian.domain import events as ev
from services.sync.writer.handlers import Deps, write_back
from tests.fakes import FakeDocumentStore
from tests.fakes_legacy import FakeLegacyTables

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
IDS = {"parcel_id": "p-1", "shipment_id": "s-1", "client_id": "c-1"}
EDITED = "updated, the monolith's change still to pull"


def planned(minutes: int) -> ev.ParcelPlanned:
    at = T0 + timedelta(minutes=minutes)
    return ev.ParcelPlanned(event_id=f"evt-{minutes}", occurred_at=at, **IDS, window_id="w-1")


def monolith_edit(applied_version: int | None) -> tuple[Deps, FakeLegacyTables]:
    """p-1 edited by the monolith (version 1, past the pull's cursor); Meridian holds the parcel,
    and its link at ``applied_version`` (None: no link, a parcel Meridian created)."""
    tables = FakeLegacyTables(clock=lambda: T0 - timedelta(hours=1))
    tables.add_parcel("p-1", pulled=True)
    store = FakeDocumentStore()
    store.set("parcels/p-1", {"parcel_id": "p-1", "status": "CREATED"})
    if applied_version is not None:
        store.set("sync_links/parcels~p-1", {"legacy_version": applied_version})
    return Deps(tables, store, clock=lambda: T0 + timedelta(seconds=150)), tables


def test_an_edit_published_but_not_applied_keeps_the_row_the_monoliths() -> None:
    deps, tables = monolith_edit(applied_version=0)
    assert write_back(planned(1), deps) == EDITED
    row = tables.row("p-1")
    assert (row.values["status"], row.written_by) == ("PLANNED", "monolith")


def test_a_meridian_parcel_the_monolith_edited_keeps_the_row_the_monoliths() -> None:
    deps, tables = monolith_edit(applied_version=None)
    assert write_back(planned(1), deps) == EDITED
    assert tables.row("p-1").written_by == "monolith"


def test_an_applied_edit_lets_the_write_be_the_bridges() -> None:
    deps, tables = monolith_edit(applied_version=1)
    before = REGISTRY.get_sample_value(
        "meridian_sync_lag_seconds_count", {"direction": "to_monolith"}
    )
    slow = REGISTRY.get_sample_value(
        "meridian_sync_lag_seconds_bucket", {"direction": "to_monolith", "le": "60.0"}
    )
    assert write_back(planned(1), deps) == "updated"
    assert tables.row("p-1").written_by == "meridian"
    # Committed 90 s after the event: observed once, above the 60 s bucket.
    assert (
        REGISTRY.get_sample_value("meridian_sync_lag_seconds_count", {"direction": "to_monolith"})
        == (before or 0) + 1
    )
    assert REGISTRY.get_sample_value(
        "meridian_sync_lag_seconds_bucket", {"direction": "to_monolith", "le": "60.0"}
    ) == (slow or 0)
    # A redelivery writes nothing and is not observed again.
    assert write_back(planned(1), deps) == "duplicate"
    assert (
        REGISTRY.get_sample_value("meridian_sync_lag_seconds_count", {"direction": "to_monolith"})
        == (before or 0) + 1
    )
