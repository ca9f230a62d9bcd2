"""A parcel the monolith moves on its own, through the whole way it travels in Meridian: applied
by the sync jobs (services/sync/apply.py) over a real PostgreSQL into the embedded document store,
each committed change given to the event publisher's handler (what Eventarc delivers), each event
Avro-encoded and decoded as a push subscription delivers it, to the consumers whose subscription
filter takes it: the ETA reactor, driver scoring, the client webhooks' payload, and not the
legacy writer (the bridge's own change). The monolith's ASSIGNED, which names no route, is
refused (Meridian's status stands, the conflict recorded): it never becomes a ``ParcelAssigned``
the publisher cannot build, a change Eventarc would retry for 24 h."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.embedded.docstore import EmbeddedDocumentStore
from services.event_publisher import handlers as publisher
from services.reactors.driver_scoring import handlers as scoring
from services.reactors.eta import handlers as eta
from services.reactors.webhook.handlers import payload
from services.sync.apply import CONFLICTS, apply_request
from services.sync.entities import PARCELS, SHIPMENTS_JOB
from services.sync.legacy import Connection
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.fakes_reactors import FakeTravelTime

CATALOG = load_catalog()
CODEC = EventCodec(CATALOG)
T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
SEED = """
INSERT INTO clients (id, name) VALUES ('c-1', 'Acme');
INSERT INTO shipments (id, client_id) VALUES ('s-1', 'c-1');
INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone, weight_kg,
                     stop_address, stop_lat, stop_lng, window_start, window_end)
VALUES ('p-1', 's-1', 'c-1', 'Ravi', '+919800000001', 1.25, '1 MG Road', 12.97, 77.6,
        '2026-03-02 09:00+05:30', '2026-03-02 12:00+05:30');
"""


@pytest.fixture
def conn(legacy_dsn: str) -> Iterator[Connection]:
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(SEED)
        yield c


class Meridian:
    """The document store the sync jobs write, and what its changes become downstream."""

    def __init__(self, data_dir: Path, conn: Connection) -> None:
        self.store, self.conn = EmbeddedDocumentStore(data_dir), conn
        self.published = FakePublisher()
        self.eta = eta.Deps(
            FakeDocumentStore(), FakePublisher(), CODEC, FakeTravelTime(), lambda: T0
        )
        self.scoring = scoring.Deps(FakeDocumentStore(), lambda: T0)

    def sync(self) -> list[tuple[ev.DomainEvent, dict[str, str]]]:
        """Apply the monolith's p-1, publish the change as the event publisher does, and hand
        each event to the consumers that subscribe to it; the events with their attributes."""
        before = self.store.get("parcels/p-1")
        request = ev.SyncRequested(
            event_id="evt-sync", occurred_at=T0, request_id="r", entity="parcels",
            origin=ev.SyncOrigin.ON_DEMAND, requester="test", ids=("p-1",),
        )  # fmt: skip
        outcome = apply_request(
            self.store, self.conn, PARCELS, request, SHIPMENTS_JOB, 100, lambda: datetime.now(UTC)
        )
        assert outcome.rejected == []
        after = self.store.get("parcels/p-1")
        assert before is not None and after is not None
        change = publisher.DocumentChange(
            "parcels/p-1", before.data, after.data, after.data["updated_at"]
        )
        sent = len(self.published.published)
        publisher.publish_change(change, publisher.Deps(self.published, CODEC))  # no DecodeError
        delivered = []
        for _, message in self.published.published[sent:]:
            event = CODEC.from_message(message.data, message.attributes)  # as a push delivers it
            attributes = dict(message.attributes)
            if CATALOG.filters["eta"].matches(attributes):
                eta.project(event, self.eta)
            if CATALOG.filters["driver-scoring"].matches(attributes):
                scoring.score_driver(event, self.scoring)
            if CATALOG.filters["client-webhook"].matches(attributes):
                assert payload(event)
            delivered.append((event, attributes))
        return delivered

    def parcel(self) -> dict[str, Any]:
        found = self.store.get("parcels/p-1")
        assert found is not None
        return dict(found.data)


def test_a_parcel_the_monolith_assigns_sends_out_and_delivers(
    tmp_path: Path, conn: Connection
) -> None:
    meridian = Meridian(tmp_path, conn)
    apply_request(
        meridian.store, conn, PARCELS,
        ev.SyncRequested(
            event_id="evt-first", occurred_at=T0, request_id="first", entity="parcels",
            origin=ev.SyncOrigin.ON_DEMAND, requester="test", ids=("p-1",),
        ),
        SHIPMENTS_JOB, 100, lambda: datetime.now(UTC),
    )  # fmt: skip

    # The monolith's dispatcher assigns the parcel to a driver: no route, which ParcelAssigned
    # names. Meridian's status stands (and the address edit is applied): nothing to announce.
    conn.execute(
        "UPDATE parcels SET status = 'ASSIGNED', driver_id = 'd-9', vehicle_id = 'v-9',"
        " stop_address = '12 Brigade Road' WHERE id = 'p-1'"
    )
    assert meridian.sync() == []
    parcel = meridian.parcel()
    assert (parcel["status"], parcel["stop"]["address"]) == ("CREATED", "12 Brigade Road")
    conflict = meridian.store.get(f"{CONFLICTS}/parcels~p-1~2")
    assert conflict is not None and conflict.data["inexpressible"] == ["route_id"]

    # It sends the parcel out: that Meridian can express (a parcel out without a planned route).
    conn.execute("UPDATE parcels SET status = 'OUT_FOR_DELIVERY', attempts = 1 WHERE id = 'p-1'")
    ((out, attributes),) = meridian.sync()
    assert isinstance(out, ev.ParcelOutForDelivery)
    assert (out.route_id, out.driver_id, out.attempt) == (None, "d-9", 1)
    assert attributes["origin"] == "monolith"
    assert not CATALOG.filters["legacy-writer"].matches(attributes)  # never written back
    board = meridian.eta.store.get("route_board/solo-p-1")  # the ETA's board of a lone parcel
    assert board is not None and set(board.data["stops"]) == {"p-1"}

    # And delivers it.
    conn.execute(
        "UPDATE parcels SET status = 'DELIVERED', delivered_at = '2026-03-02 10:30+05:30',"
        " delivered_lat = 12.9701, delivered_lng = 77.6002 WHERE id = 'p-1'"
    )
    ((delivered, _),) = meridian.sync()
    assert isinstance(delivered, ev.ParcelDelivered) and delivered.route_id is None
    status = meridian.eta.store.get("parcel_status/p-1")
    assert status is not None and status.data["sla"] == "met"
    score = meridian.scoring.store.get("driver_scores/d-9")
    assert score is not None and score.data["delivered"] == 1
