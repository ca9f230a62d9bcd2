"""Eventarc's CloudEvents are byte-identical whether the change was committed in the one shared
store of before or in the command service's own (#24), with Eventarc tailing it read-only and
keeping its cursors in a database of its own; and the payloads and attributes are pinned to
what the code before the split produced (golden digest)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.events.cloud import firestore as fs

from meridian.catalog import load_catalog
from meridian.documents.ownership import Ownership
from meridian.embedded.docstore import EmbeddedDocumentStore, store
from meridian.embedded.docstore.changelog import Cursors
from meridian.embedded.docstore.stores import ServiceStores, open_store
from meridian.embedded.eventarc import CURSORS_FILE, EventarcEmulation, tailed_store, transport_name
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.ports import DocumentStore

CATALOG = load_catalog()
GOLDEN_DIGEST = "f11eee1f6aaad7005ed0dca515ba59a24ceaf63ec5513be11126ccb4b46488e4"
WHEN = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)


def _writes(documents: DocumentStore) -> None:
    documents.create("shipments/s-1", {"shipment_id": "s-1", "client_id": "c-1", "when": WHEN})
    documents.create("parcels/p-1", {"parcel_id": "p-1", "status": "CREATED", "weight_kg": 1.5})
    documents.update("parcels/p-1", {"status": "DELIVERED", "pod.signature_ref": "sig/p-1.png"})
    documents.delete("shipments/s-1")


def _forwarded(broker: Broker) -> list[tuple[bytes, tuple[tuple[str, str], ...]]]:
    out = []
    for trigger in sorted(CATALOG.triggers):
        for m in broker.pull(transport_name(trigger), 100):
            attributes = dict(m.message.attributes)
            out.append((m.message.data, tuple(sorted(attributes.items()))))
    return out


def _digest(messages: list[tuple[bytes, tuple[tuple[str, str], ...]]]) -> str:
    canonical = [
        (
            fs.DocumentEventData.to_json(fs.DocumentEventData.deserialize(data), sort_keys=True),
            attributes,
        )
        for data, attributes in messages
    ]
    return hashlib.sha256(repr(canonical).encode()).hexdigest()


def _clock_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit times 1 ms apart from one fixed instant, the same for both layouts."""
    micros = iter(range(1_741_080_600_000_000, 1_741_080_700_000_000, 1_000))
    monkeypatch.setattr(store, "_now_micros", lambda: next(micros))


def _emulation(
    tailed: EmbeddedDocumentStore, broker: Broker, data_dir: Path, **kw: object
) -> EventarcEmulation:
    emulation = EventarcEmulation(
        CATALOG,
        tailed,
        broker,
        TokenIssuer(data_dir),
        lambda s, p: f"http://x/{s}{p}",
        **kw,  # type: ignore[arg-type]
    )
    emulation.ensure_transport()
    return emulation


def test_cloudevents_are_byte_identical_across_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: one store for every service, the cursors in it.
    before_dir = tmp_path / "before"
    shared = EmbeddedDocumentStore(before_dir)
    before_broker = Broker(before_dir)
    before = _emulation(shared, before_broker, before_dir)
    _clock_from_the_start(monkeypatch)
    _writes(shared)
    before.forward_once()
    expected = _forwarded(before_broker)
    assert len(expected) == 4  # the shipment created and deleted, the parcel created and moved
    # After: the command's own store, tailed read-only, the cursors apart.
    after_dir = tmp_path / "after"
    ownership = Ownership.of(CATALOG)
    command = ServiceStores(after_dir, ownership, "command")
    after_broker = Broker(after_dir)
    after = _emulation(
        open_store(after_dir, tailed_store(CATALOG), read_only=True),
        after_broker,
        after_dir,
        cursors=Cursors(after_dir / CURSORS_FILE),
    )
    _clock_from_the_start(monkeypatch)
    _writes(command)
    after.forward_once()
    assert _forwarded(after_broker) == expected
    # and as they were before the split: the same payloads and attributes as the code before it
    # produced for these writes (the protobuf's map entries may come in any order from one run
    # to the next, as protobuf allows, so the payload is pinned in canonical JSON)
    assert _digest(expected) == GOLDEN_DIGEST
    # The forwarder's cursors are in its own file; the command's store has none.
    assert command.store("command").changes.position(transport_name("parcel-changes")) is None
    assert Cursors(after_dir / CURSORS_FILE).position(transport_name("parcel-changes")) is not None
