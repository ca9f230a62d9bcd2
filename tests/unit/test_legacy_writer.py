"""The legacy writer's rules on the fake monolith (``tests/fakes_legacy.py``): each parcel fact's
columns, redelivery, stale and out-of-order events, final states, the monolith's own newer
status, poison events, echo suppression (the subscription's filter, the event publisher's
origin attribute, equal values written as nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.domain.errors import NotFound
from meridian.domain.model import GeoPoint, Parcel, Recipient, Shipment, Stop, TimeWindow
from services.event_publisher import handlers as publisher
from services.sync.entities import SYNC_COMMAND
from services.sync.writer.handlers import (
    PUSHED_EVENT_TYPES,
    Deps,
    write_back,
    write_back_batch,
)
from tests.fakes import FakeDocumentStore
from tests.fakes_legacy import FakeLegacyTables

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = load_catalog()
IDS = {"parcel_id": "p-1", "shipment_id": "s-1", "client_id": "c-1"}
ON_ROUTE = {"route_id": "r-1", "driver_id": "d-1", "vehicle_id": "v-1"}
WINDOW = {"window_start": T0, "window_end": T0 + timedelta(hours=3)}


def at(minutes: int) -> dict[str, Any]:
    return {"event_id": f"evt-{minutes}", "occurred_at": T0 + timedelta(minutes=minutes)}


def planned(m: int) -> ev.ParcelPlanned:
    return ev.ParcelPlanned(**at(m), **IDS, window_id="w-1")


def assigned(m: int) -> ev.ParcelAssigned:
    return ev.ParcelAssigned(**at(m), **IDS, **ON_ROUTE, window_id="w-1")


def out_for_delivery(m: int, attempt: int = 1) -> ev.ParcelOutForDelivery:
    return ev.ParcelOutForDelivery(
        **at(m),
        **IDS,
        **ON_ROUTE,
        **WINDOW,
        recipient_phone="+919800000001",
        lat=12.97,
        lng=77.6,
        address="1 MG Road",
        attempt=attempt,
    )


def delivered(m: int) -> ev.ParcelDelivered:
    return ev.ParcelDelivered(
        **at(m),
        **IDS,
        **ON_ROUTE,
        delivered_at=T0 + timedelta(minutes=m),
        lat=12.9701,
        lng=77.6002,
        window_end=WINDOW["window_end"],
        recipient_phone="+919800000001",
    )


def failed(m: int, attempt: int = 1) -> ev.DeliveryFailed:
    return ev.DeliveryFailed(
        **at(m),
        **IDS,
        **ON_ROUTE,
        failed_at=T0 + timedelta(minutes=m),
        reason="nobody home",
        attempt=attempt,
        recipient_phone="+919800000001",
    )


def requeued(m: int) -> ev.ParcelRequeued:
    return ev.ParcelRequeued(**at(m), **IDS, previous_status="DELIVERY_FAILED")


def returned(m: int) -> ev.ParcelReturned:
    return ev.ParcelReturned(**at(m), **IDS, reason="refused")


@pytest.fixture
def tables() -> FakeLegacyTables:
    tables = FakeLegacyTables(clock=lambda: T0 - timedelta(hours=1))
    tables.add_parcel("p-1")
    return tables


@pytest.fixture
def meridian() -> FakeDocumentStore:
    """Meridian's documents, which the writer reads to insert what the monolith lacks."""
    return FakeDocumentStore()


@pytest.fixture
def deps(tables: FakeLegacyTables, meridian: FakeDocumentStore) -> Deps:
    return Deps(tables, meridian)


@pytest.mark.parametrize(
    ("events", "columns"),
    [
        ([planned(1)], {"status": "PLANNED"}),
        ([assigned(2)], {"status": "ASSIGNED", "driver_id": "d-1", "vehicle_id": "v-1"}),
        ([out_for_delivery(3)], {"status": "OUT_FOR_DELIVERY", "driver_id": "d-1", "attempts": 1}),
        (
            [out_for_delivery(3), delivered(4)],
            {
                "status": "DELIVERED",
                "delivered_at": T0 + timedelta(minutes=4),
                "delivered_lat": 12.9701,
                "delivered_lng": 77.6002,
                "attempts": 1,
            },
        ),
        (
            [out_for_delivery(3), failed(4)],
            {"status": "DELIVERY_FAILED", "failure_reason": "nobody home", "attempts": 1},
        ),
        (
            [out_for_delivery(3), failed(4), requeued(5)],
            {"status": "CREATED", "driver_id": None, "vehicle_id": None, "attempts": 1},
        ),
        ([failed(4), returned(5)], {"status": "RETURNED", "failure_reason": "refused"}),
    ],
    ids=["planned", "assigned", "out", "delivered", "failed", "requeued", "returned"],
)
def test_each_fact_writes_its_columns_as_the_bridge(
    events: list[ev.DomainEvent], columns: dict[str, Any], deps: Deps, tables: FakeLegacyTables
) -> None:
    for event in events:
        assert write_back(event, deps) == "updated"
    row = tables.row("p-1")
    assert {k: row.values[k] for k in columns} == columns
    assert row.written_by == "meridian"  # the echo marker: the pull never reads it back
    assert row.version == 1 + len(events)
    assert tables.processed() == {e.event_id for e in events}


def test_a_redelivered_event_changes_nothing(deps: Deps, tables: FakeLegacyTables) -> None:
    assert write_back(assigned(2), deps) == "updated"
    row = tables.row("p-1")
    assert write_back(assigned(2), deps) == "duplicate"
    assert tables.row("p-1") == row


def test_an_event_older_than_one_applied_is_stale(deps: Deps, tables: FakeLegacyTables) -> None:
    write_back(out_for_delivery(3, attempt=2), deps)
    assert write_back(failed(1, attempt=1), deps) == "stale"  # an earlier attempt, late
    assert tables.row("p-1").values["status"] == "OUT_FOR_DELIVERY"
    assert "evt-1" in tables.processed()  # done: a redelivery is a duplicate


def test_a_delivered_parcel_never_goes_back(deps: Deps, tables: FakeLegacyTables) -> None:
    tables.add_parcel("p-1", status="DELIVERED", updated_at=T0)  # the monolith's own delivery
    assert write_back(failed(10), deps) == "final"
    assert write_back(requeued(11), deps) == "final"
    row = tables.row("p-1")
    assert (row.values["status"], row.written_by, row.version) == ("DELIVERED", "monolith", 1)


def test_the_monolith_status_one_move_further_stands(deps: Deps, tables: FakeLegacyTables) -> None:
    # The monolith sent the parcel out itself after Meridian assigned it: the state machine
    # says OUT_FOR_DELIVERY follows ASSIGNED, as the pull decides on Meridian's side.
    tables.add_parcel("p-1", status="OUT_FOR_DELIVERY", updated_at=T0 + timedelta(minutes=5))
    assert write_back(assigned(2), deps) == "monolith wins"
    assert tables.row("p-1").written_by == "monolith"


def test_meridians_status_one_move_further_is_written_over_the_monolith(
    deps: Deps, tables: FakeLegacyTables
) -> None:
    tables.add_parcel("p-1", status="ASSIGNED", updated_at=T0 + timedelta(minutes=5))
    assert write_back(out_for_delivery(3), deps) == "updated"
    assert tables.row("p-1").values["status"] == "OUT_FOR_DELIVERY"


def test_over_a_monolith_change_not_yet_pulled_the_row_stays_the_monoliths(
    deps: Deps, tables: FakeLegacyTables
) -> None:
    # The monolith edited the parcel before Meridian assigned it, and the pull has not read the
    # edit yet: marking the row as the bridge's would hide that edit from the pull for good.
    tables.add_parcel("p-1", status="PLANNED", pulled=False, updated_at=T0)
    assert write_back(assigned(2), deps) == "updated, the monolith's change still to pull"
    row = tables.row("p-1")
    assert (row.values["status"], row.written_by, row.version) == ("ASSIGNED", "monolith", 2)


def test_a_monolith_change_older_than_the_event_is_superseded(
    deps: Deps, tables: FakeLegacyTables
) -> None:
    tables.add_parcel("p-1", status="CREATED", updated_at=T0)  # pulled, then Meridian moved on
    assert write_back(assigned(2), deps) == "updated"
    assert tables.row("p-1").written_by == "meridian"


def test_equal_values_write_nothing(deps: Deps, tables: FakeLegacyTables) -> None:
    # What the bridge itself applied from the monolith, should it come back: the row says it.
    tables.add_parcel("p-1", status="ASSIGNED", driver_id="d-1", vehicle_id="v-1")
    assert write_back(assigned(2), deps) == "unchanged"
    row = tables.row("p-1")
    assert (row.written_by, row.version) == ("monolith", 1)


def test_an_unknown_parcel_is_not_found_and_leaves_no_trace(
    deps: Deps, tables: FakeLegacyTables
) -> None:
    ghost = ev.ParcelAssigned(**at(2), **{**IDS, "parcel_id": "p-ghost"}, **ON_ROUTE)
    with pytest.raises(NotFound, match="p-ghost"):
        write_back(ghost, deps)
    assert tables.processed() == set()  # retried, then dead-lettered; replayable later
    tables.add_parcel("p-ghost")
    assert write_back(ghost, deps) == "updated"


def test_a_batch_commits_once_and_a_poison_event_fails_alone(
    deps: Deps, tables: FakeLegacyTables
) -> None:
    tables.add_parcel("p-2")
    ghost = ev.ParcelPlanned(**at(7), **{**IDS, "parcel_id": "p-ghost"}, window_id="w-1")
    other = ev.ParcelPlanned(**at(8), **{**IDS, "parcel_id": "p-2"}, window_id="w-1")
    before = tables.transactions
    outcomes = write_back_batch([assigned(2), ghost, other, assigned(2)], deps)
    assert outcomes[0] == "updated" and outcomes[2] == "updated" and outcomes[3] == "duplicate"
    assert isinstance(outcomes[1], NotFound)
    assert tables.transactions == before + 1
    assert tables.processed() == {"evt-2", "evt-8"}


def test_a_batch_applies_a_parcels_events_in_their_order(
    deps: Deps, tables: FakeLegacyTables
) -> None:
    outcomes = write_back_batch([assigned(2), out_for_delivery(3), delivered(4)], deps)
    assert outcomes == ["updated", "updated", "updated"]
    assert tables.row("p-1").values["status"] == "DELIVERED"


def test_other_event_types_are_not_written(deps: Deps, tables: FakeLegacyTables) -> None:
    # (ShipmentCreated was the example here; the writer now inserts Meridian's new shipments.)
    closed = ev.ShipmentClosed(
        **at(1),
        shipment_id="s-1",
        client_id="c-1",
        delivered_count=1,
        failed_count=0,
        returned_count=0,
    )
    assert write_back(closed, deps) == "not pushed"
    assert tables.processed() == set()


# Echo suppression: what the bridge applied from the monolith never reaches the writer -----------


def test_the_subscription_takes_every_parcel_fact_and_nothing_else() -> None:
    wanted = CATALOG.filters["legacy-writer"]
    taken = [t for t in CATALOG.event_types if wanted.matches({"eventType": t})]
    assert sorted(taken) == sorted(PUSHED_EVENT_TYPES)


def test_a_fact_the_bridge_applied_from_the_monolith_is_filtered_out() -> None:
    wanted = CATALOG.filters["legacy-writer"]
    assert not wanted.matches({"eventType": "ParcelDelivered", "origin": "monolith"})
    assert wanted.matches({"eventType": "ParcelDelivered", "origin": "meridian"})


def _change(last_command: str) -> publisher.DocumentChange:
    parcel = {
        **IDS,
        "status": "ASSIGNED",
        "driver_id": "d-1",
        "vehicle_id": "v-1",
        "route_id": "r-1",
        "window_id": "w-1",
        "stop": {},
        "recipient": {"phone": "+919800000001"},
        "_last_command": {"name": last_command},
    }
    return publisher.DocumentChange(
        "parcels/p-1", {**parcel, "status": "PLANNED"}, parcel, T0 + timedelta(minutes=2)
    )


class _Published:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def publish(self, topic: str, messages: Any) -> list[str]:
        self.messages += messages
        return ["m"] * len(messages)


@pytest.mark.parametrize(
    ("command", "origin"), [(SYNC_COMMAND, "monolith"), ("AssignParcel", None)]
)
def test_the_event_publisher_marks_what_the_bridge_applied(
    command: str, origin: str | None
) -> None:
    published = _Published()
    deps = publisher.Deps(published, EventCodec(CATALOG))  # type: ignore[arg-type]
    publisher.publish_change(_change(command), deps)
    (message,) = published.messages
    assert message.attributes.get("origin") == origin
    assert CATALOG.filters["legacy-writer"].matches(message.attributes) is (origin is None)


def test_the_publishers_bridge_command_is_the_bridges() -> None:
    assert publisher.SYNC_COMMAND == SYNC_COMMAND


# A shipment created in Meridian: its rows are inserted, and its parcels' facts then apply -------

NATIVE = {"parcel_id": "p-9a", "shipment_id": "s-9", "client_id": "c-9"}


def _native_shipment(meridian: FakeDocumentStore, client: bool = True) -> None:
    """A shipment of two parcels as Meridian's command path writes it."""
    for parcel_id in ("p-9a", "p-9b"):
        parcel = Parcel(
            parcel_id=parcel_id,
            shipment_id="s-9",
            client_id="c-9",
            recipient=Recipient(name="Meena", phone="+919800000009"),
            stop=Stop(
                location=GeoPoint(lat=12.93, lng=77.62),
                address="9 Residency Road",
                window=TimeWindow(start=T0, end=T0 + timedelta(hours=2)),
            ),
            weight_kg=2.5,
        )
        meridian.set(f"parcels/{parcel_id}", parcel.model_dump(mode="python"))
    shipment = Shipment(
        shipment_id="s-9", client_id="c-9", parcel_ids=("p-9a", "p-9b"), created_at=T0
    )
    meridian.set("shipments/s-9", {**shipment.model_dump(mode="python"), "status": "OPEN"})
    if client:
        meridian.set("clients/c-9", {"client_id": "c-9", "name": "Nova Retail"})


def _created(m: int) -> ev.ShipmentCreated:
    return ev.ShipmentCreated(
        **at(m), shipment_id="s-9", client_id="c-9", parcel_ids=("p-9a", "p-9b")
    )


def test_a_fact_of_a_parcel_created_in_meridian_inserts_its_rows_then_applies(
    deps: Deps, tables: FakeLegacyTables, meridian: FakeDocumentStore
) -> None:
    _native_shipment(meridian)
    planned = ev.ParcelPlanned(**at(3), **NATIVE, window_id="w-1")

    assert write_back(planned, deps) == "inserted 4 row(s), updated"

    parcel = tables.inserted("parcels", "p-9a")
    assert parcel is not None
    assert (parcel["recipient_name"], parcel["stop_address"], parcel["weight_kg"]) == (
        "Meena",
        "9 Residency Road",
        2.5,
    )
    assert parcel["window_start"] == T0 and parcel["status"] == "CREATED"  # as Meridian had it
    row = tables.row("p-9a")
    assert (row.values["status"], row.written_by) == ("PLANNED", "meridian")  # never pulled back
    assert tables.row("p-9b").values["status"] == "CREATED"  # the shipment's other parcel
    assert tables.inserted("shipments", "s-9") == {
        "id": "s-9",
        "client_id": "c-9",
        "created_at": T0,
        "deleted_at": None,
    }
    assert tables.inserted("clients", "c-9") == {
        "id": "c-9",
        "name": "Nova Retail",
        "email": None,
        "deleted_at": None,
    }
    # Its next facts apply to the row as to any other: nothing more is inserted.
    assigned_native = ev.ParcelAssigned(**at(4), **NATIVE, **ON_ROUTE, window_id="w-1")
    assert write_back(assigned_native, deps) == "updated"
    assert tables.row("p-9a").values["driver_id"] == "d-1"


def test_a_shipment_created_in_meridian_is_inserted_once(
    deps: Deps, tables: FakeLegacyTables, meridian: FakeDocumentStore
) -> None:
    _native_shipment(meridian)
    assert write_back(_created(1), deps) == "inserted 4 row(s)"
    assert write_back(_created(1), deps) == "duplicate"
    assert tables.row("p-9a").written_by == "meridian"
    # A parcel fact arriving after it finds the row (and one that arrived first, the rows it made).
    planned = ev.ParcelPlanned(**at(3), **NATIVE, window_id="w-1")
    assert write_back(planned, deps) == "updated"
    again = ev.ShipmentCreated(**{**_created(1).model_dump(), "event_id": "evt-other"})
    assert write_back(again, deps) == "unchanged"
    assert tables.row("p-9a").values["status"] == "PLANNED"


def test_a_client_meridian_has_no_document_for_is_named_by_its_id(
    deps: Deps, tables: FakeLegacyTables, meridian: FakeDocumentStore
) -> None:
    _native_shipment(meridian, client=False)
    write_back(_created(1), deps)
    client = tables.inserted("clients", "c-9")
    assert client is not None and client["name"] == "c-9"


def test_a_shipment_neither_side_has_is_not_found_and_leaves_no_trace(
    deps: Deps, tables: FakeLegacyTables
) -> None:
    with pytest.raises(NotFound, match="shipment s-9 is neither in the monolith"):
        write_back(_created(1), deps)
    assert tables.processed() == set() and tables.inserted("shipments", "s-9") is None


def test_a_shipment_the_bridge_applied_from_the_monolith_is_filtered_out() -> None:
    wanted = CATALOG.filters["legacy-writer"]
    assert wanted.matches({"eventType": "ShipmentCreated"})
    assert not wanted.matches({"eventType": "ShipmentCreated", "origin": "monolith"})
    assert not wanted.matches({"eventType": "ShipmentClosed"})
