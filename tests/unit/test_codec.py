"""The codec: every event type survives Avro, Pub/Sub-message and CloudEvent round trips, and
bytes that are not a whole valid event are refused."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.errors import DecodeError, ValidationError
from meridian.domain.events import (
    EVENT_TYPES,
    DomainEvent,
    ParcelDelivered,
    VehiclePing,
    derive_event_id,
)
from meridian.observability import configure_tracing
from tests.strategies import model_strategy

CATALOG = load_catalog()
CODEC = EventCodec(CATALOG)
NOW = datetime(2026, 11, 21, 9, 30, 15, 123456, tzinfo=UTC)

any_event = st.sampled_from(sorted(EVENT_TYPES)).flatmap(
    lambda name: model_strategy(EVENT_TYPES[name])
)


def delivered() -> ParcelDelivered:
    return ParcelDelivered(
        event_id="evt-1",
        occurred_at=NOW,
        parcel_id="p-1",
        shipment_id="s-1",
        client_id="c-1",
        route_id=None,
        driver_id="drv-7",
        vehicle_id="veh-3",
        delivered_at=NOW,
        lat=12.97,
        lng=77.59,
        window_end=NOW + timedelta(hours=1),
        recipient_phone="+919812345678",
    )


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_every_event_type_round_trips_through_avro(event_type: str, data: st.DataObject) -> None:
    event = data.draw(model_strategy(EVENT_TYPES[event_type]))
    encoded = CODEC.encode(event)
    assert CODEC.decode(event_type, encoded) == event


@settings(max_examples=100, deadline=None)
@given(event=any_event)
def test_every_event_round_trips_as_a_message_and_as_a_cloudevent(event: DomainEvent) -> None:
    message = CODEC.to_message(event)
    assert CODEC.from_message(message.data, message.attributes) == event
    spec = CATALOG.event_types[event.event_type]
    assert message.attributes["eventType"] == event.event_type
    assert message.attributes["eventId"] == event.event_id
    assert message.attributes["schemaVersion"] == str(spec.version)
    assert message.attributes["subject"] == str(getattr(event, spec.subject))
    expected_key = str(getattr(event, spec.ordering_key)) if spec.ordering_key else ""
    assert message.ordering_key == expected_key
    cloudevent = CODEC.to_cloudevent(event)
    assert CODEC.from_cloudevent(cloudevent) == event


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_each_class_declares_exactly_its_avro_fields(event_type: str) -> None:
    """The Python class and the .avsc contract cannot drift apart."""
    schema = json.loads(CATALOG.schema_path(event_type).read_text())
    cls = EVENT_TYPES[event_type]
    assert [f["name"] for f in schema["fields"]] == list(cls.model_fields)
    hints = typing.get_type_hints(cls)
    for field in schema["fields"]:
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        optional = type(None) in typing.get_args(hints[field["name"]])
        assert nullable == optional, f"{event_type}.{field['name']}: nullable in Avro is {nullable}"


def test_telemetry_pings_carry_the_vehicle_id_attribute() -> None:
    ping = VehiclePing(
        event_id="e", occurred_at=NOW, vehicle_id="veh-9", lat=1, lng=2, recorded_at=NOW
    )
    attributes = CODEC.to_message(ping).attributes
    assert attributes["vehicleId"] == "veh-9"
    assert attributes["eventType"] == "VehiclePing"


def test_the_current_trace_travels_as_traceparent() -> None:
    tracer = configure_tracing("test").get_tracer("test")
    with tracer.start_as_current_span("deliver") as span:
        message = CODEC.to_message(delivered())
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert message.attributes["traceparent"].split("-")[1] == trace_id
    assert "traceparent" not in CODEC.to_message(delivered()).attributes


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_a_batch_of_records_gives_the_messages_one_at_a_time_would(
    event_type: str, data: st.DataObject
) -> None:
    events = data.draw(st.lists(model_strategy(EVENT_TYPES[event_type]), min_size=1, max_size=4))
    records = [event.model_dump(mode="python") for event in events]
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for traceparent in (None, trace):
        assert CODEC.record_messages(event_type, records, traceparent) == [
            CODEC.to_message(event, traceparent) for event in events
        ]


def test_a_batch_continues_the_current_trace_once_for_all_its_messages() -> None:
    tracer = configure_tracing("test").get_tracer("test")
    pings = [
        VehiclePing(
            event_id=f"e{i}", occurred_at=NOW, vehicle_id="v", lat=1, lng=2, recorded_at=NOW
        )
        for i in range(3)
    ]
    records = [ping.model_dump(mode="python") for ping in pings]
    with tracer.start_as_current_span("telemetry") as span:
        messages = CODEC.record_messages("VehiclePing", records)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert {m.attributes["traceparent"].split("-")[1] for m in messages} == {trace_id}
    assert [m.attributes["eventId"] for m in messages] == ["e0", "e1", "e2"]
    assert CODEC.record_messages("VehiclePing", []) == []


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic warns while dumping the bad value
def test_an_event_not_matching_its_schema_is_refused_at_encode() -> None:
    bad = ParcelDelivered.model_construct(**{**delivered().model_dump(), "lat": "north"})
    with pytest.raises(ValidationError, match="ParcelDelivered does not match its schema"):
        CODEC.encode(bad)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda b: b[: len(b) // 2], "not a valid ParcelDelivered"),
        (lambda b: b + b"\x00\x01", "2 bytes left over"),
        (lambda b: b"", "not a valid ParcelDelivered"),
        (lambda b: b"\xff" * 40, "not a valid ParcelDelivered"),
    ],
)
def test_corrupt_bodies_never_decode_to_half_an_event(
    mutate: typing.Callable[[bytes], bytes], problem: str
) -> None:
    with pytest.raises(DecodeError, match=problem):
        CODEC.decode("ParcelDelivered", mutate(CODEC.encode(delivered())))


def test_a_body_that_breaks_the_domain_rules_is_refused() -> None:
    ping = VehiclePing.model_construct(
        event_id="e",
        occurred_at=NOW,
        vehicle_id="v",
        lat=95.0,
        lng=0.0,
        driver_id=None,
        heading_deg=None,
        speed_mps=None,
        accuracy_m=None,
        recorded_at=NOW,
    )
    body = CODEC.encode(ping)  # Avro has no range rules; the domain does
    with pytest.raises(DecodeError, match="lat"):
        CODEC.decode("VehiclePing", body)


def test_message_attributes_are_checked() -> None:
    message = CODEC.to_message(delivered())
    with pytest.raises(DecodeError, match="no eventType"):
        CODEC.from_message(message.data, {})
    with pytest.raises(DecodeError, match="unknown event type 'ParcelLost'"):
        CODEC.from_message(message.data, {"eventType": "ParcelLost"})
    with pytest.raises(DecodeError, match="schema version 2 is not the version this service reads"):
        CODEC.from_message(message.data, {**message.attributes, "schemaVersion": "2"})
    with pytest.raises(DecodeError, match="differs from the body"):
        CODEC.from_message(message.data, {**message.attributes, "eventId": "evt-other"})
    with pytest.raises(DecodeError):  # the body of one type read as another
        CODEC.from_message(message.data, {**message.attributes, "eventType": "ShipmentCreated"})


def test_cloudevent_attributes() -> None:
    cloudevent = CODEC.to_cloudevent(delivered())
    attributes = cloudevent.get_attributes()
    assert attributes["type"] == "io.meridian.ParcelDelivered.v1"
    assert attributes["source"] == "//meridian/event-publisher"
    assert attributes["subject"] == "p-1"
    assert attributes["id"] == "evt-1"
    assert attributes["datacontenttype"] == "application/avro"


def test_event_ids_are_deterministic() -> None:
    assert derive_event_id("parcels/p-1", "2026-11-21T09:30:00Z") == derive_event_id(
        "parcels/p-1", "2026-11-21T09:30:00Z"
    )
    assert derive_event_id("parcels/p-1", "a") != derive_event_id("parcels/p-1", "b")
    assert derive_event_id("ab", "c") != derive_event_id("a", "bc")
