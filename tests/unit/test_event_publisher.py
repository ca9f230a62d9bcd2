"""Committed changes → domain events, and the Eventarc wire format between the two halves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.events.cloud import firestore as fs

from meridian.app.records import parcel_document
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.codec.firestore_values import from_fields, to_fields
from meridian.domain.actors import Actor
from meridian.domain.errors import DecodeError
from meridian.domain.model import GeoPoint, Parcel, ProofOfDelivery, Recipient, Stop, TimeWindow
from meridian.embedded.docstore import Change
from meridian.embedded.eventarc import (
    Trigger,
    cloudevent_attributes,
    document_event,
    document_event_bytes,
    path_pattern,
)
from services.event_publisher.app import change_from_cloudevent
from services.event_publisher.handlers import (
    Deps,
    DocumentChange,
    event_for_change,
    publish_change,
    publish_changes,
)
from tests.fakes import FakePublisher
from tests.unit.test_metrics import counter

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
DRIVER = Actor("drv-7", "driver")
CATALOG = load_catalog()


def parcel() -> Parcel:
    window = TimeWindow(start=NOW, end=NOW + timedelta(hours=2))
    return Parcel(
        parcel_id="p-1",
        shipment_id="s-1",
        client_id="c-1",
        recipient=Recipient(name="Asha", phone="+919812345678"),
        stop=Stop(location=GeoPoint(lat=12.97, lng=77.59), address="1 MG Road", window=window),
        weight_kg=2.0,
    )


def doc(p: Parcel) -> dict[str, Any]:
    return parcel_document(p, NOW, "test", DRIVER)


def change(old: Parcel | None, new: Parcel, at: datetime = NOW) -> DocumentChange:
    return DocumentChange("parcels/p-1", doc(old) if old else None, doc(new), at)


def test_each_state_change_is_its_event() -> None:
    created = parcel()
    planned = created.plan("w-1")
    assigned = planned.assign("r-1", "drv-7", "veh-3")
    out = assigned.send_out()
    delivered = out.deliver(
        NOW, GeoPoint(lat=12.9, lng=77.6), ProofOfDelivery(photo_ref="pod/p-1.jpg")
    )
    failed = out.fail("gate locked")
    steps = [
        (created, planned, "ParcelPlanned"),
        (planned, assigned, "ParcelAssigned"),
        (assigned, out, "ParcelOutForDelivery"),
        (out, delivered, "ParcelDelivered"),
        (out, failed, "DeliveryFailed"),
        (failed, failed.requeue(), "ParcelRequeued"),
        (failed, failed.return_to_sender(), "ParcelReturned"),
    ]
    for old, new, expected in steps:
        event = event_for_change(change(old, new))
        assert event is not None and event.event_type == expected
    delivered_event = event_for_change(change(out, delivered))
    assert delivered_event is not None
    assert delivered_event.model_dump()["pod_photo_ref"] == "pod/p-1.jpg"
    assert delivered_event.model_dump()["recipient_phone"] == "+919812345678"


def test_the_planned_stop_sequence_travels_with_assignment_and_out_for_delivery() -> None:
    planned = parcel().plan("w-1")
    assigned = planned.assign("r-1", "drv-7", "veh-3", stop_sequence=4)
    for old, new in ((planned, assigned), (assigned, assigned.send_out())):
        event = event_for_change(change(old, new))
        assert event is not None and event.model_dump()["stop_sequence"] == 4
    requeued = assigned.send_out().fail("gate locked").requeue()
    assert requeued.stop_sequence is None  # the next window plans it afresh


def test_no_event_for_creation_field_updates_or_deletes() -> None:
    p = parcel()
    assert event_for_change(DocumentChange("parcels/p-1", None, doc(p), NOW)) is None
    assert event_for_change(change(p, p)) is None
    assert event_for_change(DocumentChange("parcels/p-1", doc(p), None, NOW)) is None


def test_event_ids_are_stable_for_a_redelivered_change() -> None:
    out = parcel().plan("w").assign("r", "d", "v").send_out()
    delivered = out.deliver(NOW, GeoPoint(lat=0, lng=0))
    first, again = (
        event_for_change(change(out, delivered)),
        event_for_change(change(out, delivered)),
    )
    later = event_for_change(change(out, delivered, NOW + timedelta(seconds=1)))
    assert first is not None and again is not None and later is not None
    assert first.event_id == again.event_id != later.event_id


def test_a_document_missing_what_its_event_needs_is_refused() -> None:
    out = doc(parcel().plan("w").assign("r", "d", "v").send_out())
    broken = {**out, "status": "DELIVERED"}  # no delivered_at, no position
    with pytest.raises(DecodeError, match="does not carry"):
        event_for_change(DocumentChange("parcels/p-1", out, broken, NOW))


def test_shipment_creation_is_published_with_the_parcel_ordering_key() -> None:
    publisher = FakePublisher()
    new = {"shipment_id": "s-1", "client_id": "c-1", "parcel_ids": ["p-1", "p-2"], "status": "OPEN"}
    event = publish_change(
        DocumentChange("shipments/s-1", None, new, NOW), Deps(publisher, EventCodec(CATALOG))
    )
    assert event is not None and event.event_type == "ShipmentCreated"
    [(topic, message)] = publisher.published
    assert topic == "logistics.events"
    assert message.ordering_key == "s-1"


def test_path_patterns() -> None:
    pattern = path_pattern("parcels/{parcelId}")
    assert pattern.match("parcels/p-1")
    assert not pattern.match("parcels/p-1/notes/n-1")
    assert not pattern.match("shipments/s-1")


def test_the_eventarc_wire_format_round_trips_into_the_publisher() -> None:
    out = parcel().plan("w").assign("r", "d", "v").send_out()
    delivered = out.deliver(NOW, GeoPoint(lat=0, lng=0))
    committed = Change(
        seq=7,
        path="parcels/p-1",
        collection="parcels",
        kind="updated",
        old_data=doc(out),
        new_data=doc(delivered),
        update_mask=("status", "delivered_at"),
        create_time=NOW,
        commit_time=NOW + timedelta(seconds=3),
    )
    trigger = Trigger.of("parcel-changes", CATALOG.triggers["parcel-changes"])
    assert trigger.matches(committed)
    headers = cloudevent_attributes(trigger, committed, "proj", "local")
    assert headers["ce-type"] == "google.cloud.firestore.document.v1.written"
    assert headers["ce-subject"] == "documents/parcels/p-1"
    assert headers["ce-source"] == "//firestore.googleapis.com/projects/proj/databases/(default)"
    body = fs.DocumentEventData.serialize(document_event(committed, "proj"))
    decoded = fs.DocumentEventData.deserialize(body)
    assert decoded.value.name == "projects/proj/databases/(default)/documents/parcels/p-1"
    assert list(decoded.update_mask.field_paths) == ["status", "delivered_at"]
    received = change_from_cloudevent(headers, body)
    assert received.path == "parcels/p-1"
    assert received.new is not None and received.new["status"] == "DELIVERED"
    assert received.update_time == NOW + timedelta(seconds=3)
    assert event_for_change(received) == event_for_change(
        change(out, delivered, NOW + timedelta(seconds=3))
    )


def test_a_noop_write_triggers_nothing() -> None:
    same = doc(parcel())
    noop = Change(
        seq=1,
        path="parcels/p-1",
        collection="parcels",
        kind="updated",
        old_data=same,
        new_data=same,
        update_mask=(),
        create_time=NOW,
        commit_time=NOW,
    )
    assert not Trigger.of("parcel-changes", CATALOG.triggers["parcel-changes"]).matches(noop)


def test_garbage_is_not_a_firestore_event() -> None:
    with pytest.raises(DecodeError, match="not a Firestore document event"):
        change_from_cloudevent({"ce-type": "com.example"}, b"")
    with pytest.raises(DecodeError, match="not a DocumentEventData"):
        change_from_cloudevent(
            {"ce-type": "google.cloud.firestore.document.v1.written", "ce-document": "parcels/p-1"},
            b"\xff\xff\xff",
        )


def test_a_pod_photo_recorded_on_a_delivered_parcel_is_pod_image_received() -> None:
    delivered = parcel().plan("w-1").assign("r-1", "drv-7", "veh-3").send_out()
    delivered = delivered.deliver(NOW, GeoPoint(lat=12.9, lng=77.6), None)
    before = doc(delivered)
    image = {"ref": "file:///blobs/pod/p-1/ab.jpg", "content_type": "image/jpeg", "size_bytes": 812}
    after = {**before, "pod_image": image}
    later = NOW + timedelta(minutes=3)
    event = event_for_change(DocumentChange("parcels/p-1", before, after, later))
    assert event is not None and event.event_type == "PodImageReceived"
    assert (event.parcel_id, event.blob_ref, event.size_bytes) == ("p-1", image["ref"], 812)  # type: ignore[attr-defined]
    assert event.occurred_at == later
    # The same photo seen again (a redelivered change) is the same event; an unrelated field
    # update after it announces nothing.
    again = event_for_change(
        DocumentChange("parcels/p-1", before, after, later + timedelta(seconds=1))
    )
    assert again is not None and again.event_id == event.event_id
    assert (
        event_for_change(DocumentChange("parcels/p-1", after, {**after, "note": "x"}, later))
        is None
    )
    # It survives the codec, as the publisher sends it.
    publisher = FakePublisher()
    publish_change(
        DocumentChange("parcels/p-1", before, after, later), Deps(publisher, EventCodec(CATALOG))
    )
    ((topic, message),) = publisher.published
    assert topic == "logistics.events" and message.attributes["eventType"] == "PodImageReceived"


def test_the_forwarders_raw_encoding_means_what_the_value_mapping_says() -> None:
    """The forwarder builds DocumentEventData on raw protobufs for speed; decoded, it must equal
    what ``meridian.codec.firestore_values`` builds value by value."""
    data: dict[str, Any] = {
        "none": None, "yes": True, "n": -(2**63), "big": 2**64, "x": 1.5, "s": "é", "b": b"\x00",
        "at": NOW, "empty_map": {}, "empty_list": [], "nested": {"list": [1, {"k": [None, "v"]}]},
    }  # fmt: skip
    created = Change(
        seq=1, path="parcels/p-1", collection="parcels", kind="created", old_data=None,
        new_data=data, update_mask=(), create_time=None, commit_time=NOW,
    )  # fmt: skip
    decoded = fs.DocumentEventData.deserialize(document_event_bytes(created, "proj"))
    assert dict(decoded.value.fields) == to_fields(data)
    assert from_fields(decoded.value.fields) == {**data, "big": float(2**64)}
    assert decoded.value.create_time == NOW and decoded.value.update_time == NOW
    assert not fs.DocumentEventData.pb(decoded).HasField("old_value")
    assert not fs.DocumentEventData.pb(decoded).HasField("update_mask")


def test_changes_delivered_together_are_published_in_one_call_and_a_bad_one_fails_alone() -> None:
    calls: list[int] = []

    class Counting(FakePublisher):
        def publish(self, topic: str, messages: Any) -> list[str]:
            calls.append(len(messages))
            return super().publish(topic, messages)

    publisher = Counting()
    out = parcel().plan("w").assign("r", "d", "v").send_out()
    broken = {**doc(out), "status": "DELIVERED"}  # no delivered_at, no position
    batch = [
        (
            change(parcel().plan("w").assign("r", "d", "v"), out),
            "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        ),
        (DocumentChange("parcels/p-1", doc(out), broken, NOW), None),
        (change(out, out.deliver(NOW, GeoPoint(lat=0, lng=0))), None),
    ]
    outcomes = publish_changes(batch, Deps(publisher, EventCodec(CATALOG)))
    assert isinstance(outcomes[1], DecodeError)
    assert [getattr(o, "event_type", None) for o in (outcomes[0], outcomes[2])] == [
        "ParcelOutForDelivery",
        "ParcelDelivered",
    ]
    assert calls == [2]
    assert publisher.published[0][1].attributes["traceparent"].startswith("00-aaaa")


def test_deliveries_and_failures_are_counted_once_each_once_published() -> None:
    publisher = FakePublisher()
    deps = Deps(publisher, EventCodec(CATALOG))
    out = parcel().plan("w").assign("r", "d", "v").send_out()
    delivery = change(out, out.deliver(NOW, GeoPoint(lat=0, lng=0)))
    failure = change(out, out.fail("gate locked"), NOW + timedelta(seconds=1))
    before = counter("meridian_deliveries_total"), counter("meridian_delivery_failures_total")

    def moved() -> tuple[float, float]:
        return (
            counter("meridian_deliveries_total") - before[0],
            counter("meridian_delivery_failures_total") - before[1],
        )

    publisher.fail_with = RuntimeError("broker down")
    with pytest.raises(RuntimeError):
        publish_changes([(delivery, None), (failure, None)], deps)
    assert moved() == (0, 0)  # not published: not counted (the change is redelivered)
    publisher.fail_with = None
    # The same change twice in one batch is one delivery; other facts count nothing.
    assert publish_changes([(delivery, None), (delivery, None), (failure, None)], deps)
    publish_change(change(parcel().plan("w").assign("r", "d", "v"), out), deps)
    publish_change(change(out, out), deps)  # a field update: no event
    assert moved() == (1, 1)
