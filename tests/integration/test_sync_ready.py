"""The sync-ready job's check over a real PostgreSQL and the embedded store: a request's rows are
pending until applied at their current version, ready afterwards, pending again when the monolith
changes a requested row, and a row changed after a range request's upper bound is not waited for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from meridian.domain.events import SyncOrigin, SyncRequested
from meridian.embedded.docstore import EmbeddedDocumentStore
from services.sync.apply import apply_request
from services.sync.entities import PARCELS, SHIPMENTS_JOB
from services.sync.legacy import Connection
from services.sync.ready import pending
from tests.integration.test_sync_apply import SEED


@pytest.fixture
def conn(legacy_dsn: str) -> Iterator[Connection]:
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(SEED)
        yield c


def _request(**bounds: object) -> SyncRequested:
    return SyncRequested(
        event_id="evt-ready",
        occurred_at=datetime.now(UTC),
        request_id="ready",
        entity=PARCELS.name,
        origin=SyncOrigin.ON_DEMAND,
        requester="test",
        **bounds,  # type: ignore[arg-type]
    )


def test_pending_until_applied_at_the_current_version(conn: Connection, tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    request = _request(ids=("p-1", "p-2"))
    assert pending(store, conn, PARCELS, request, 500) == ["p-1", "p-2"]
    apply_request(store, conn, PARCELS, request, SHIPMENTS_JOB, 500, lambda: datetime.now(UTC))
    assert pending(store, conn, PARCELS, request, 500) == []
    conn.execute("UPDATE parcels SET recipient_name = 'Asha' WHERE id = 'p-2'")
    assert pending(store, conn, PARCELS, request, 500) == ["p-2"]  # a newer version to apply


def test_a_row_changed_after_a_range_is_the_next_requests(conn: Connection, tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    (last,) = conn.execute("SELECT max(updated_at) AS at, max(id) AS id FROM parcels").fetchall()
    request = _request(through_updated_at=last["at"], through_id=last["id"])
    apply_request(store, conn, PARCELS, request, SHIPMENTS_JOB, 500, lambda: datetime.now(UTC))
    assert pending(store, conn, PARCELS, request, 500) == []
    conn.execute("UPDATE parcels SET recipient_name = 'Asha' WHERE id = 'p-1'")
    assert pending(store, conn, PARCELS, request, 500) == []
