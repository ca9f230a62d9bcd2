"""The legacy writer over a real PostgreSQL (``tests/legacy_db.py``), through its push endpoint as
Pub/Sub calls it: each parcel fact lands in the monolith's row, a redelivery and a stale event
change nothing, a poison event is refused so that it dead-letters, the rows it writes carry the
bridge's marker so the scheduled pull (``services.sync.pull``) never brings them back, while the
monolith's own edits still flow."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from meridian import adapters
from meridian.app.clients import register_client
from meridian.app.records import parcel_document, shipment_document
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Legacy, Settings
from meridian.domain import events as ev
from meridian.domain.actors import Actor
from meridian.domain.model import GeoPoint, Parcel, Recipient, Shipment, Stop, TimeWindow
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.push import envelope
from meridian.ports import Message, ReceivedMessage, Transaction
from services.sync.pull import run_pull
from services.sync.writer.app import create_app

SEED = """
INSERT INTO clients (id, name) VALUES ('c-1', 'Acme');
INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1');
INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, weight_kg,
                     stop_address, stop_lat, stop_lng, window_start, window_end)
SELECT 'p-' || n, 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, n || ' MG Road', 12.97, 77.6,
       '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30'
FROM generate_series(1, 3) AS n;
"""
# The facts happen after the monolith's rows and edits, which the fixtures and tests write at the
# time each test runs: in a whole suite that is minutes after this module is imported, so the facts
# are dated an hour ahead (events dated before the rows' updated_at would be the monolith's later
# changes, a different case, tested on its own).
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
ON_ROUTE = {"route_id": "r-1", "driver_id": "d-1", "vehicle_id": "v-1"}


class Published:
    """The pull's publisher: what it would put on sync.requests."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        self.messages += messages
        return [str(len(self.messages))] * len(messages)


@pytest.fixture
def settings(legacy_dsn: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, legacy=Legacy(dsn=legacy_dsn))


@pytest.fixture
def monolith(legacy_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(SEED)
        yield conn


@pytest.fixture
def push(settings: Settings, monolith: psycopg.Connection[Any]) -> Iterator[Any]:
    """POST one event to the writer as Pub/Sub's push does; its HTTP status."""
    issuer = TokenIssuer(settings.data_dir)
    audience = f"{settings.url_of('legacy-writer')}/events"
    codec = EventCodec(load_catalog())
    with TestClient(create_app(settings)) as client:

        def send(event: ev.DomainEvent | bytes) -> int:
            if isinstance(event, bytes):
                message = Message(event, {"eventType": "ParcelDelivered"})
            else:
                message = codec.to_message(event)
            received = ReceivedMessage("ack", "m-1", message, datetime.now(UTC), 1)
            body = json.dumps(envelope(received, "legacy-writer", settings.project, True))
            token = issuer.token(audience, settings.push_identity)
            answer = client.post(
                "/events", content=body, headers={"Authorization": f"Bearer {token}"}
            )
            return answer.status_code

        yield send


def ids(parcel: str, minutes: int, kind: str) -> dict[str, Any]:
    return {
        "event_id": f"{kind}-{parcel}-{minutes}",
        "occurred_at": T0 + timedelta(minutes=minutes),
        "parcel_id": parcel,
        "shipment_id": "s-1",
        "client_id": "c-1",
    }


def out(parcel: str, m: int, attempt: int = 1) -> ev.ParcelOutForDelivery:
    return ev.ParcelOutForDelivery(
        **ids(parcel, m, "out"),
        **ON_ROUTE,
        recipient_phone="+919800000001",
        lat=12.97,
        lng=77.6,
        address="1 MG Road",
        window_start=T0,
        window_end=T0 + timedelta(hours=3),
        attempt=attempt,
    )


def delivered(parcel: str, m: int) -> ev.ParcelDelivered:
    return ev.ParcelDelivered(
        **ids(parcel, m, "delivered"),
        **ON_ROUTE,
        delivered_at=T0 + timedelta(minutes=m),
        lat=12.9701,
        lng=77.6002,
        window_end=T0 + timedelta(hours=3),
        recipient_phone="+919800000001",
    )


def failed(parcel: str, m: int) -> ev.DeliveryFailed:
    return ev.DeliveryFailed(
        **ids(parcel, m, "failed"),
        **ON_ROUTE,
        failed_at=T0 + timedelta(minutes=m),
        reason="nobody home",
        attempt=1,
        recipient_phone="+919800000001",
    )


def row(conn: psycopg.Connection[Any], parcel: str) -> dict[str, Any]:
    found = conn.execute("SELECT * FROM parcels WHERE id = %s", (parcel,)).fetchone()
    assert found is not None
    return dict(found)


def processed(conn: psycopg.Connection[Any]) -> set[str]:
    return {r["event_id"] for r in conn.execute("SELECT event_id FROM bridge_processed_events")}


def test_each_fact_is_written_once_and_never_pulled_back(
    push: Any, monolith: psycopg.Connection[Any], settings: Settings
) -> None:
    published = Published()
    # The pull has read the monolith's parcels before Meridian moves them.
    assert run_pull(settings, published, "parcels") == 1  # type: ignore[arg-type]

    facts: list[ev.DomainEvent] = [
        ev.ParcelPlanned(**ids("p-1", 1, "planned"), window_id="w-1"),
        ev.ParcelAssigned(**ids("p-1", 2, "assigned"), **ON_ROUTE, window_id="w-1"),
        out("p-1", 3),
        delivered("p-1", 4),
        out("p-2", 3),
        failed("p-2", 4),
        ev.ParcelRequeued(**ids("p-2", 5, "requeued"), previous_status="DELIVERY_FAILED"),
        ev.ParcelReturned(**ids("p-3", 6, "returned"), reason="refused"),
    ]
    assert [push(f) for f in facts[:7]] == [204] * 7

    p1 = row(monolith, "p-1")
    assert (p1["status"], p1["driver_id"], p1["vehicle_id"], p1["attempts"]) == (
        "DELIVERED",
        "d-1",
        "v-1",
        1,
    )
    assert p1["delivered_at"] == T0 + timedelta(minutes=4)
    assert (p1["delivered_lat"], p1["delivered_lng"]) == (12.9701, 77.6002)
    assert (p1["written_by"], p1["version"]) == ("meridian", 5)  # the echo marker, four writes
    p2 = row(monolith, "p-2")
    assert (p2["status"], p2["driver_id"], p2["failure_reason"]) == ("CREATED", None, "nobody home")
    assert processed(monolith) == {f.event_id for f in facts[:7]}

    # A redelivery, and an event older than the delivery (a replayed dead letter): nothing.
    assert push(delivered("p-1", 4)) == 204
    assert push(failed("p-1", 3)) == 204
    assert row(monolith, "p-1") == p1

    # Nothing the writer wrote comes back through the pull...
    assert run_pull(settings, published, "parcels") == 0  # type: ignore[arg-type]
    # ...but the monolith's own edit does.
    monolith.execute("UPDATE parcels SET recipient_name = 'Ravi K' WHERE id = 'p-3'")
    assert run_pull(settings, published, "parcels") == 1  # type: ignore[arg-type]
    # RETURNED needs a failed delivery first in Meridian; the monolith's row follows the fact.
    assert push(facts[7]) == 204
    assert (row(monolith, "p-3")["status"], row(monolith, "p-3")["written_by"]) == (
        "RETURNED",
        "meridian",
    )


def test_a_delivered_row_never_goes_back(push: Any, monolith: psycopg.Connection[Any]) -> None:
    monolith.execute("UPDATE parcels SET status = 'DELIVERED' WHERE id = 'p-1'")  # the monolith
    before = row(monolith, "p-1")
    assert push(failed("p-1", 1)) == 204
    assert push(out("p-1", 2, attempt=2)) == 204
    assert row(monolith, "p-1") == before
    assert processed(monolith) == {"failed-p-1-1", "out-p-1-2"}


def test_a_poison_event_is_refused_so_pubsub_dead_letters_it(
    push: Any, monolith: psycopg.Connection[Any]
) -> None:
    assert push(delivered("p-ghost", 1)) == 404  # a nack: retried, then dead-lettered
    assert push(b"\x00not avro") == 400
    assert processed(monolith) == set()
    assert push(delivered("p-1", 1)) == 204  # the next one is not held up


def test_over_a_monolith_edit_not_yet_pulled_the_row_stays_the_monoliths(
    push: Any, monolith: psycopg.Connection[Any], settings: Settings
) -> None:
    published = Published()
    assert run_pull(settings, published, "parcels") == 1  # type: ignore[arg-type]
    monolith.execute("UPDATE parcels SET recipient_phone = '+919800000002' WHERE id = 'p-1'")
    assert push(ev.ParcelPlanned(**ids("p-1", 1, "planned"), window_id="w-1")) == 204
    p1 = row(monolith, "p-1")
    assert (p1["status"], p1["written_by"]) == ("PLANNED", "monolith")
    assert run_pull(settings, published, "parcels") == 1  # type: ignore[arg-type]  # the edit


# Shipments created in Meridian reach the monolith's tables -------------------------------------


def _native_shipment(settings: Settings) -> None:
    """A client, and a shipment of two parcels, as Meridian's command path writes them."""
    store = adapters.document_store(settings)
    register_client(store, "c-9", "Nova Retail")
    parcels = [
        Parcel(
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
        for parcel_id in ("p-9a", "p-9b")
    ]
    shipment = Shipment(
        shipment_id="s-9", client_id="c-9", parcel_ids=("p-9a", "p-9b"), created_at=T0
    )

    def write(tx: Transaction) -> None:
        tx.create("shipments/s-9", shipment_document(shipment, T0))
        for parcel in parcels:
            document = parcel_document(parcel, T0, "CreateShipment", Actor("c-9", "client"))
            tx.create(f"parcels/{parcel.parcel_id}", document)

    store.run_transaction(write)


def native(parcel: str, m: int, kind: str) -> dict[str, Any]:
    return {**ids(parcel, m, kind), "shipment_id": "s-9", "client_id": "c-9"}


def test_a_meridian_shipments_facts_insert_its_rows_instead_of_dead_lettering(
    push: Any, monolith: psycopg.Connection[Any], settings: Settings
) -> None:
    _native_shipment(settings)
    published = Published()
    for table in ("clients", "shipments", "parcels"):  # the seed's rows
        assert run_pull(settings, published, table) == 1  # type: ignore[arg-type]

    # The parcel's first fact reaches the writer before its shipment's creation does.
    assert push(ev.ParcelPlanned(**native("p-9a", 1, "planned"), window_id="w-1")) == 204
    assert push(ev.ParcelAssigned(**native("p-9a", 2, "assigned"), **ON_ROUTE)) == 204
    created = ev.ShipmentCreated(
        event_id="created-s-9",
        occurred_at=T0,
        shipment_id="s-9",
        client_id="c-9",
        parcel_ids=("p-9a", "p-9b"),
    )
    assert push(created) == 204
    assert push(created) == 204  # a redelivery

    p9a = row(monolith, "p-9a")
    assert (p9a["status"], p9a["driver_id"], p9a["written_by"]) == ("ASSIGNED", "d-1", "meridian")
    assert (p9a["recipient_name"], p9a["stop_address"], float(p9a["weight_kg"])) == (
        "Meena",
        "9 Residency Road",
        2.5,
    )
    assert p9a["window_start"] == T0 and p9a["window_end"] == T0 + timedelta(hours=2)
    p9b = row(monolith, "p-9b")
    assert (p9b["status"], p9b["written_by"], p9b["version"]) == ("CREATED", "meridian", 1)
    shipment = monolith.execute("SELECT * FROM shipments WHERE id = 's-9'").fetchone()
    assert shipment is not None and (shipment["client_id"], shipment["written_by"]) == (
        "c-9",
        "meridian",
    )
    client = monolith.execute("SELECT * FROM clients WHERE id = 'c-9'").fetchone()
    assert client is not None and (client["name"], client["written_by"]) == (
        "Nova Retail",
        "meridian",
    )
    # Each event one transaction with its id; none of these rows comes back through the pull.
    assert {"planned-p-9a-1", "assigned-p-9a-2", "created-s-9"} <= processed(monolith)
    for table in ("clients", "shipments", "parcels"):
        assert run_pull(settings, published, table) == 0  # type: ignore[arg-type]
    assert push(delivered("p-ghost", 1)) == 404  # a parcel neither side has still dead-letters
