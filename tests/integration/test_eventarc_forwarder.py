"""The Eventarc forwarder on the real embedded store and broker: exactly the watched documents'
committed changes become CloudEvents, and the cursor moves past everything else undecoded."""

from __future__ import annotations

from pathlib import Path

from meridian.catalog import load_catalog
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.eventarc import EventarcEmulation, transport_name
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker


def test_only_watched_collections_are_forwarded_and_the_cursor_passes_the_rest(
    tmp_path: Path,
) -> None:
    store, broker = EmbeddedDocumentStore(tmp_path), Broker(tmp_path)
    emulation = EventarcEmulation(
        load_catalog(), store, broker, TokenIssuer(tmp_path), lambda s, p: f"http://x/{s}{p}"
    )
    emulation.ensure_transport()
    store.set("parcels/p-1", {"parcel_id": "p-1", "status": "CREATED"})
    for i in range(30):  # a reactor's projections: no trigger watches them
        store.set(f"route_board/r-{i}", {"stops": {f"p-{j}": {"n": j} for j in range(50)}})
    store.set("shipments/s-1", {"shipment_id": "s-1"})
    store.set("parcels/p-1", {"parcel_id": "p-1", "status": "PLANNED"})

    assert emulation.forward_once(limit=10) == 1  # the first ten changes hold one parcel write
    assert emulation.forward_once(limit=100) == 2  # the shipment and the second parcel write
    assert emulation.forward_once(limit=100) == 0
    latest = store.changes.latest_seq()
    for trigger in ("parcel-changes", "shipment-changes"):
        assert store.changes.position(transport_name(trigger)) == latest

    parcels = broker.pull(transport_name("parcel-changes"), 10)
    assert [m.message.attributes["ce-document"] for m in parcels] == ["parcels/p-1"] * 2
    assert [m.message.attributes["ce-type"].rsplit(".", 1)[1] for m in parcels] == [
        "written",
        "written",
    ]
    shipments = broker.pull(transport_name("shipment-changes"), 10)
    assert [m.message.attributes["ce-document"] for m in shipments] == ["shipments/s-1"]
