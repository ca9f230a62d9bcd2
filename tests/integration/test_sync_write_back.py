"""When Meridian wins a conflict, the sync apply writes its winning values back into the monolith
(services/sync/apply.py, ``write_back``), over a real PostgreSQL: the row becomes the bridge's
(``written_by = 'meridian'``, so the pull brings nothing back), only at the version applied (a
monolith edit in between is left alone and merged by the next run), and a job killed between
Meridian's commit and the write derives it again when run again. Each applied row is observed in
``meridian_sync_lag_seconds{direction="to_meridian"}``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from meridian.domain import events as ev
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Transaction
from services.sync.apply import CONFLICTS, Outcome, apply_request, read_rows
from services.sync.entities import PARCELS, SHIPMENTS_JOB
from services.sync.legacy import Connection

T = TypeVar("T")
T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
SEED = """
INSERT INTO clients (id, name) VALUES ('c-1', 'Acme');
INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1');
INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, weight_kg,
                     stop_address, stop_lat, stop_lng, window_start, window_end)
VALUES ('p-1', 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, '1 MG Road', 12.97, 77.6,
        '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30');
"""
FAILED_ATTEMPT = (
    "UPDATE parcels SET status = 'DELIVERY_FAILED', driver_id = 'd-1', vehicle_id = 'v-1',"
    " attempts = 1, failure_reason = 'nobody home' WHERE id = 'p-1'"
)


class Killed(Exception):
    """The job's process dying right after Meridian's commit."""


class Store(EmbeddedDocumentStore):
    """The embedded store, with something to happen once right after a commit."""

    after_commit: Callable[[], None] | None = None

    def run_transaction(self, fn: Callable[[Transaction], T], **kwargs: Any) -> T:
        result = super().run_transaction(fn, **kwargs)
        then, self.after_commit = self.after_commit, None
        if then is not None:
            then()
        return result


@pytest.fixture
def conn(legacy_dsn: str) -> Iterator[Connection]:
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(SEED)
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def sync(store: Store, conn: Connection) -> Outcome:
    request = ev.SyncRequested(
        event_id="evt-sync", occurred_at=T0, request_id="r", entity="parcels",
        origin=ev.SyncOrigin.ON_DEMAND, requester="test", ids=("p-1",),
    )  # fmt: skip
    return apply_request(
        store, conn, PARCELS, request, SHIPMENTS_JOB, 100, lambda: datetime.now(UTC)
    )


def row(conn: Connection) -> dict[str, Any]:
    found = conn.execute("SELECT * FROM parcels WHERE id = 'p-1'").fetchone()
    assert found is not None
    return dict(found)


def deliver_in_meridian(store: Store) -> datetime:
    """The command path's delivery, not pushed yet; when it was delivered."""
    delivered_at = datetime.now(UTC).replace(microsecond=0)

    def deliver(tx: Transaction) -> None:
        parcel = tx.get("parcels/p-1")
        assert parcel is not None
        tx.set(
            "parcels/p-1",
            {
                **parcel.data,
                "status": "DELIVERED",
                "driver_id": "d-1",
                "vehicle_id": "v-1",
                "attempts": 1,
                "delivered_at": delivered_at,
                "delivered_position": {"lat": 12.9701, "lng": 77.6002},
                "updated_at": datetime.now(UTC),
                "_last_command": {"name": "DeliverParcel", "by": "d-1", "role": "driver"},
            },
        )

    store.run_transaction(deliver)
    return delivered_at


def pulled(conn: Connection) -> list[str]:
    """The parcels the scheduled pull would bring (every monolith change, no bounds)."""
    request = ev.SyncRequested(
        event_id="evt-pull", occurred_at=T0, request_id="pull", entity="parcels",
        origin=ev.SyncOrigin.SCHEDULED, requester="test",
    )  # fmt: skip
    return [r["id"] for rows in read_rows(conn, PARCELS, request, 100) for r in rows]


def meridian_wins(store: Store, conn: Connection) -> datetime:
    """p-1 in Meridian, delivered there; the monolith, not knowing, records a failed attempt."""
    sync(store, conn)
    delivered_at = deliver_in_meridian(store)
    conn.execute(FAILED_ATTEMPT)
    return delivered_at


def test_meridians_winning_status_is_written_back_as_the_bridges(
    store: Store, conn: Connection
) -> None:
    delivered_at = meridian_wins(store, conn)
    version = row(conn)["version"]
    lags = REGISTRY.get_sample_value(
        "meridian_sync_lag_seconds_count", {"direction": "to_meridian"}
    )

    outcome = sync(store, conn)

    assert outcome.written_back == 1
    parcel = store.get("parcels/p-1")
    assert parcel is not None and parcel.data["status"] == "DELIVERED"  # final-state
    conflict = store.get(f"{CONFLICTS}/parcels~p-1~{version}")
    assert conflict is not None and conflict.data["winner"] == "meridian"
    after = row(conn)
    assert (after["status"], after["written_by"], after["version"]) == (
        "DELIVERED", "meridian", version + 1,
    )  # fmt: skip
    assert after["failure_reason"] is None
    assert after["delivered_at"] == delivered_at
    assert (after["delivered_lat"], after["delivered_lng"]) == (12.9701, 77.6002)
    assert pulled(conn) == []  # the pull brings nothing back
    # Meridian kept its every value: no change became visible there, so no lag is observed.
    assert (
        REGISTRY.get_sample_value("meridian_sync_lag_seconds_count", {"direction": "to_meridian"})
        == lags
    )

    # Run again: nothing to apply, nothing to write.
    assert sync(store, conn).written_back == 0
    assert row(conn)["version"] == version + 1

    # The monolith's next edit (another column) is merged without a conflict over the status the
    # row holds as written back, and nothing is written back for it.
    conn.execute("UPDATE parcels SET stop_address = '12 Brigade Road' WHERE id = 'p-1'")
    outcome = sync(store, conn)
    assert (outcome.updated, outcome.conflicts, outcome.written_back) == (1, [], 0)
    parcel = store.get("parcels/p-1")
    assert parcel is not None
    assert (parcel.data["status"], parcel.data["stop"]["address"]) == (
        "DELIVERED", "12 Brigade Road",
    )  # fmt: skip
    assert (row(conn)["status"], row(conn)["written_by"]) == ("DELIVERED", "monolith")


def test_a_row_the_monolith_changed_meanwhile_is_not_written_back_then_converges(
    store: Store, conn: Connection
) -> None:
    meridian_wins(store, conn)

    def monolith_renames() -> None:
        conn.execute("UPDATE parcels SET recipient_name = 'Ravi K' WHERE id = 'p-1'")

    store.after_commit = monolith_renames
    assert sync(store, conn).written_back == 0
    edited = row(conn)
    assert (edited["status"], edited["written_by"], edited["recipient_name"]) == (
        "DELIVERY_FAILED", "monolith", "Ravi K",
    )  # fmt: skip  # the version guard: the monolith's row is left alone
    assert pulled(conn) == ["p-1"]  # and the next pull brings it

    assert sync(store, conn).written_back == 1  # the next run merges it, and writes back
    converged = row(conn)
    assert (converged["status"], converged["written_by"], converged["recipient_name"]) == (
        "DELIVERED", "meridian", "Ravi K",
    )  # fmt: skip
    parcel = store.get("parcels/p-1")
    assert parcel is not None
    assert (parcel.data["status"], parcel.data["recipient"]["name"]) == ("DELIVERED", "Ravi K")
    assert pulled(conn) == []


def test_a_job_killed_before_its_write_back_writes_it_when_run_again(
    store: Store, conn: Connection
) -> None:
    meridian_wins(store, conn)
    version = row(conn)["version"]

    def die() -> None:
        raise Killed

    store.after_commit = die
    with pytest.raises(Killed):
        sync(store, conn)
    link = store.get("sync_links/parcels~p-1")
    assert link is not None and link.data["legacy_version"] == version  # Meridian committed
    assert link.data["write_back"]  # and recorded what the monolith is to be given
    assert (row(conn)["status"], row(conn)["version"]) == ("DELIVERY_FAILED", version)

    outcome = sync(store, conn)
    assert (outcome.unchanged, outcome.written_back) == (1, 1)  # applied already; written now
    after = row(conn)
    assert (after["status"], after["written_by"], after["failure_reason"]) == (
        "DELIVERED", "meridian", None,
    )  # fmt: skip
    assert pulled(conn) == []
    assert sync(store, conn).written_back == 0  # and only once


def test_a_refused_monolith_status_is_not_overwritten(store: Store, conn: Connection) -> None:
    """Inexpressible is not Meridian winning: the monolith's ASSIGNED (no route) stays its own."""
    sync(store, conn)
    conn.execute(
        "UPDATE parcels SET status = 'ASSIGNED', driver_id = 'd-9', vehicle_id = 'v-9'"
        " WHERE id = 'p-1'"
    )
    assert sync(store, conn).written_back == 0
    conn.execute("UPDATE parcels SET stop_address = '12 Brigade Road' WHERE id = 'p-1'")
    assert sync(store, conn).written_back == 0
    assert (row(conn)["status"], row(conn)["written_by"]) == ("ASSIGNED", "monolith")


def test_a_late_row_is_observed_with_its_lag(store: Store, conn: Connection) -> None:
    conn.execute("ALTER TABLE parcels DISABLE TRIGGER parcels_touch")
    conn.execute(
        "UPDATE parcels SET updated_at = %s WHERE id = 'p-1'",
        (datetime.now(UTC) - timedelta(seconds=100),),
    )
    conn.execute("ALTER TABLE parcels ENABLE TRIGGER parcels_touch")
    before = REGISTRY.get_sample_value(
        "meridian_sync_lag_seconds_bucket", {"direction": "to_meridian", "le": "90.0"}
    )
    total = REGISTRY.get_sample_value(
        "meridian_sync_lag_seconds_count", {"direction": "to_meridian"}
    )
    assert sync(store, conn).created >= 1
    # The shipment (just inserted) and the parcel (100 s old) are observed; the parcel above 90 s.
    assert (
        REGISTRY.get_sample_value("meridian_sync_lag_seconds_count", {"direction": "to_meridian"})
        == (total or 0) + 2
    )
    assert (
        REGISTRY.get_sample_value(
            "meridian_sync_lag_seconds_bucket", {"direction": "to_meridian", "le": "90.0"}
        )
        == (before or 0) + 1
    )
