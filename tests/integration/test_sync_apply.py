"""Applying the monolith's rows into Meridian's documents (the sync jobs' work) over a real
PostgreSQL and the embedded document store: new shipments arrive as the command path writes
them, applying twice changes nothing, edits on both sides are resolved by the rules and recorded,
and what the bridge writes carries its echo markers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from meridian import metrics
from meridian.domain.events import SyncOrigin, SyncRequested
from meridian.domain.model import Parcel
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Query
from services.sync.apply import CONFLICTS, Outcome, apply_request
from services.sync.entities import (
    CLIENTS,
    LINKS,
    PARCELS,
    SHIPMENTS,
    SHIPMENTS_JOB,
    SYNC_COMMAND,
    Entity,
    document_checksum,
    row_checksum,
)
from services.sync.legacy import Connection

SEED = """
INSERT INTO clients (id, name) VALUES ('c-1', 'Acme');
INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1');
INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, weight_kg,
                     stop_address, stop_lat, stop_lng, window_start, window_end)
SELECT 'p-' || n, 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, n || ' MG Road', 12.97, 77.6,
       '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30'
FROM generate_series(1, 2) AS n;
"""


@pytest.fixture
def conn(legacy_dsn: str) -> Iterator[Connection]:
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(SEED)
        yield c


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedDocumentStore:
    return EmbeddedDocumentStore(tmp_path)


def _request(entity: Entity, *ids: str) -> SyncRequested:
    return SyncRequested(
        event_id="evt-test",
        occurred_at=datetime.now(UTC),
        request_id="test",
        entity=entity.name,
        origin=SyncOrigin.ON_DEMAND,
        requester="test",
        ids=ids,
    )


def _apply(store: EmbeddedDocumentStore, conn: Connection, entity: Entity, *ids: str) -> Outcome:
    request = _request(entity, *ids)
    return apply_request(
        store, conn, entity, request, SHIPMENTS_JOB, 500, lambda: datetime.now(UTC)
    )


def _doc(store: EmbeddedDocumentStore, path: str) -> dict[str, Any]:
    found = store.get(path)
    assert found is not None, path
    return dict(found.data)


def test_a_monolith_shipment_arrives_as_the_command_path_writes_it(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    outcome = _apply(store, conn, PARCELS, "p-1")  # its shipment comes with it, and both parcels

    assert outcome.created == 3 and not outcome.rejected
    shipment = _doc(store, "shipments/s-1")
    assert (shipment["parcel_ids"], shipment["status"]) == (["p-1", "p-2"], "OPEN")
    parcel = _doc(store, "parcels/p-1")
    model = Parcel.model_validate({k: v for k, v in parcel.items() if k in Parcel.model_fields})
    assert model.status == "CREATED" and model.recipient.phone == "+919800000001"
    assert parcel["_last_command"]["name"] == SYNC_COMMAND
    (row,) = conn.execute("SELECT * FROM parcels WHERE id = 'p-1'").fetchall()
    assert document_checksum(PARCELS, parcel) == row_checksum(PARCELS, row)
    link = _doc(store, f"{LINKS}/parcels~p-1")
    assert (link["legacy_version"], link["meridian_updated_at"]) == (1, parcel["updated_at"])


def test_applying_twice_changes_nothing(store: EmbeddedDocumentStore, conn: Connection) -> None:
    _apply(store, conn, PARCELS, "p-1", "p-2")
    before = {p: _doc(store, f"parcels/{p}")["updated_at"] for p in ("p-1", "p-2")}

    again = _apply(store, conn, PARCELS, "p-1", "p-2")
    shipment_again = _apply(store, conn, SHIPMENTS, "s-1")

    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert (shipment_again.created, shipment_again.updated) == (0, 0)
    assert {p: _doc(store, f"parcels/{p}")["updated_at"] for p in before} == before


def test_a_change_in_the_monolith_only_is_taken(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _apply(store, conn, PARCELS, "p-1")
    conn.execute("UPDATE parcels SET recipient_name = 'Ravi K', weight_kg = 2 WHERE id = 'p-1'")

    outcome = _apply(store, conn, PARCELS, "p-1")

    assert (outcome.updated, outcome.conflicts) == (1, [])
    parcel = _doc(store, "parcels/p-1")
    assert (parcel["recipient"]["name"], parcel["weight_kg"]) == ("Ravi K", 2.0)
    assert parcel["_sync"]["version"] == 2


def _meridian_writes(store: EmbeddedDocumentStore, path: str, **changes: Any) -> None:
    """A write of Meridian's own (the command path), after the bridge's."""
    document = _doc(store, path)
    store.set(
        path,
        {
            **document,
            **changes,
            "updated_at": datetime.now(UTC),
            "_last_command": {"name": "DeliverParcel", "by": "d-1", "role": "driver"},
        },
    )


def test_a_delivered_parcel_never_goes_back_and_the_conflict_is_recorded(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _apply(store, conn, PARCELS, "p-1")
    delivered_at = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    _meridian_writes(
        store,
        "parcels/p-1",
        status="DELIVERED",
        driver_id="d-1",
        vehicle_id="v-1",
        attempts=1,
        delivered_at=delivered_at,
        delivered_position={"lat": 12.97, "lng": 77.6},
    )
    # Later, the monolith's clerk marks the delivery failed and fixes the recipient's name.
    conn.execute(
        "UPDATE parcels SET status = 'DELIVERY_FAILED', attempts = 1, failure_reason = 'absent',"
        " recipient_name = 'Ravi Kumar' WHERE id = 'p-1'"
    )
    counted = metrics.SYNC_CONFLICTS.labels("parcels")._value.get()

    outcome = _apply(store, conn, PARCELS, "p-1")

    parcel = _doc(store, "parcels/p-1")
    assert parcel["status"] == "DELIVERED" and parcel["delivered_at"] == delivered_at
    assert parcel["failure_reason"] is None  # follows the status's winner
    assert parcel["recipient"]["name"] == "Ravi Kumar"  # only the monolith changed it
    ((key, _),) = outcome.conflicts
    assert key == "parcels~p-1"
    recorded = _doc(store, f"{CONFLICTS}/parcels~p-1~2")
    assert recorded["meridian"]["status"] == "DELIVERED"
    assert recorded["monolith"]["status"] == "DELIVERY_FAILED"
    rules = {d["field"]: (d["winner"], d["rule"]) for d in recorded["decisions"]}
    assert rules["status"] == ("meridian", "final-state")
    assert rules["failure_reason"] == ("meridian", "final-state")
    # The recipient changed on the monolith's side only (three-way merge): taken, no conflict.
    assert "recipient" not in rules
    assert recorded["winner"] == "meridian"
    assert metrics.SYNC_CONFLICTS.labels("parcels")._value.get() == counted + 1
    # Applied again: nothing more, and no second conflict.
    again = _apply(store, conn, PARCELS, "p-1")
    assert (again.updated, again.conflicts) == (0, [])
    assert len(store.query(Query(CONFLICTS))) == 1


def test_the_later_meridian_edit_wins_over_an_earlier_monolith_edit(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _apply(store, conn, CLIENTS, "c-1")
    conn.execute("UPDATE clients SET name = 'Acme (monolith)' WHERE id = 'c-1'")
    _meridian_writes(store, "clients/c-1", name="Acme (Meridian)")

    outcome = _apply(store, conn, CLIENTS, "c-1")

    assert _doc(store, "clients/c-1")["name"] == "Acme (Meridian)"
    ((_, (decision,)),) = outcome.conflicts
    assert (decision.field, decision.winner, decision.rule) == ("name", "meridian", "last-writer")


def test_a_row_that_is_no_valid_parcel_is_rejected_and_the_rest_applied(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _apply(store, conn, PARCELS, "p-1", "p-2")
    conn.execute("UPDATE parcels SET recipient_phone = '98000' WHERE id = 'p-1'")
    conn.execute("UPDATE parcels SET recipient_name = 'Meena' WHERE id = 'p-2'")

    outcome = _apply(store, conn, PARCELS, "p-1", "p-2")

    assert outcome.rejected == ["parcels~p-1"]
    assert _doc(store, "parcels/p-1")["recipient"]["phone"] == "+919800000001"
    assert _doc(store, "parcels/p-2")["recipient"]["name"] == "Meena"


# The three-way merge: only what both sides changed is a conflict ------------------------------


def _meridian_assigns(store: EmbeddedDocumentStore, parcel: str) -> None:
    _meridian_writes(
        store,
        f"parcels/{parcel}",
        status="ASSIGNED",
        window_id="w-1",
        route_id="r-1",
        driver_id="d-1",
        vehicle_id="v-1",
        stop_sequence=0,
    )


def test_a_field_only_the_monolith_changed_does_not_undo_meridians_assignment(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    # The review's case: Meridian assigned the parcel after the last sync; the monolith then
    # edited only its address, its row still CREATED. CREATED against ASSIGNED cannot be ordered
    # by the state machine (a re-queue leads back to CREATED), and the two-way merge gave the
    # status to the last writer, the monolith.
    _apply(store, conn, PARCELS, "p-1")
    _meridian_assigns(store, "p-1")
    conn.execute("UPDATE parcels SET stop_address = '12 Brigade Road' WHERE id = 'p-1'")

    outcome = _apply(store, conn, PARCELS, "p-1")

    parcel = _doc(store, "parcels/p-1")
    assert (parcel["status"], parcel["driver_id"], parcel["route_id"]) == ("ASSIGNED", "d-1", "r-1")
    assert parcel["stop"]["address"] == "12 Brigade Road"
    assert (outcome.updated, outcome.conflicts) == (1, [])
    assert store.query(Query(CONFLICTS)) == []
    # The link's base now holds both sides' values: applied again, still nothing to decide.
    conn.execute("UPDATE parcels SET recipient_name = 'Ravi K' WHERE id = 'p-1'")
    again = _apply(store, conn, PARCELS, "p-1")
    assert again.conflicts == [] and _doc(store, "parcels/p-1")["status"] == "ASSIGNED"


def test_a_field_both_changed_alike_is_no_conflict_and_one_changed_apart_is(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _apply(store, conn, PARCELS, "p-1")
    parcel = _doc(store, "parcels/p-1")
    # Both corrected the recipient's name the same way; both changed the weight, differently.
    recipient = {**parcel["recipient"], "name": "Ravi Kumar"}
    _meridian_writes(store, "parcels/p-1", recipient=recipient, weight_kg=3.0)
    conn.execute("UPDATE parcels SET recipient_name = 'Ravi Kumar', weight_kg = 4 WHERE id = 'p-1'")

    outcome = _apply(store, conn, PARCELS, "p-1")

    ((_, decisions),) = outcome.conflicts
    assert [(d.field, d.winner, d.rule) for d in decisions] == [
        ("weight_kg", "monolith", "last-writer")  # the row was stamped after Meridian's write
    ]
    parcel = _doc(store, "parcels/p-1")
    assert (parcel["recipient"]["name"], parcel["weight_kg"]) == ("Ravi Kumar", 4.0)
    recorded = _doc(store, f"{CONFLICTS}/parcels~p-1~2")
    assert (recorded["meridian"]["weight_kg"], recorded["monolith"]["weight_kg"]) == (3.0, 4.0)
    assert [d["field"] for d in recorded["decisions"]] == ["weight_kg"]


def test_a_status_both_sides_moved_is_decided_by_the_state_machine(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _apply(store, conn, PARCELS, "p-1")
    _meridian_assigns(store, "p-1")
    conn.execute(
        "UPDATE parcels SET status = 'OUT_FOR_DELIVERY', driver_id = 'd-2', vehicle_id = 'v-2',"
        " attempts = 1 WHERE id = 'p-1'"
    )

    outcome = _apply(store, conn, PARCELS, "p-1")

    parcel = _doc(store, "parcels/p-1")
    assert (parcel["status"], parcel["driver_id"], parcel["attempts"]) == (
        "OUT_FOR_DELIVERY",
        "d-2",
        1,
    )
    ((_, decisions),) = outcome.conflicts
    assert {d.field: (d.winner, d.rule) for d in decisions} == {
        f: ("monolith", "state-machine") for f in ("status", "driver_id", "vehicle_id", "attempts")
    }


def test_a_link_without_a_base_falls_back_to_the_two_way_rules(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    # A record applied before the link kept a base: every field that differs is decided.
    _apply(store, conn, PARCELS, "p-1")
    link = _doc(store, f"{LINKS}/parcels~p-1")
    del link["base"]
    store.set(f"{LINKS}/parcels~p-1", link)
    _meridian_assigns(store, "p-1")
    conn.execute("UPDATE parcels SET stop_address = '12 Brigade Road' WHERE id = 'p-1'")

    outcome = _apply(store, conn, PARCELS, "p-1")

    ((_, decisions),) = outcome.conflicts
    assert {d.field for d in decisions} >= {"status", "stop"}
    assert "base" in _doc(store, f"{LINKS}/parcels~p-1")  # from now on, three-way


# A status the monolith holds that a Meridian parcel cannot -----------------------------------


def test_a_monolith_assignment_without_a_route_is_refused_and_recorded(
    store: EmbeddedDocumentStore, conn: Connection
) -> None:
    _apply(store, conn, PARCELS, "p-1")
    conn.execute(
        "UPDATE parcels SET status = 'ASSIGNED', driver_id = 'd-9', vehicle_id = 'v-9',"
        " stop_address = '12 Brigade Road' WHERE id = 'p-1'"
    )
    counted = metrics.SYNC_CONFLICTS.labels("parcels")._value.get()

    outcome = _apply(store, conn, PARCELS, "p-1")

    parcel = _doc(store, "parcels/p-1")
    assert (parcel["status"], parcel["driver_id"], parcel["vehicle_id"]) == ("CREATED", None, None)
    assert parcel["stop"]["address"] == "12 Brigade Road"  # the rest of the row is applied
    recorded = _doc(store, f"{CONFLICTS}/parcels~p-1~2")
    assert recorded["inexpressible"] == ["route_id"]
    assert {d["field"]: (d["winner"], d["rule"]) for d in recorded["decisions"]} == {
        f: ("meridian", "inexpressible") for f in ("status", "driver_id", "vehicle_id")
    }
    assert recorded["monolith"]["status"] == "ASSIGNED"
    assert metrics.SYNC_CONFLICTS.labels("parcels")._value.get() == counted + 1
    assert outcome.rejected == []
    # Nothing more to decide until either side moves the parcel on.
    conn.execute("UPDATE parcels SET recipient_name = 'Ravi K' WHERE id = 'p-1'")
    again = _apply(store, conn, PARCELS, "p-1")
    assert again.conflicts == [] and _doc(store, "parcels/p-1")["status"] == "CREATED"
