"""The event catalog: the real one is valid, and broken ones are refused with a useful message."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from meridian.catalog import DEFAULT_CATALOG, PushDelivery, load_catalog, parse_duration
from meridian.domain.errors import CatalogError
from meridian.domain.events import EVENT_TYPES

REQUIRED_EVENT_TYPES = {
    "VehiclePing",
    "ShipmentCreated",
    "ParcelPlanned",
    "ParcelAssigned",
    "ParcelOutForDelivery",
    "ParcelDelivered",
    "DeliveryFailed",
    "RouteEtaUpdated",
    "SlaAtRisk",
    "SlaBreached",
    "GeofenceCrossed",
    "VehicleIdle",
    "PodImageReceived",
    "DispatchWindowOpened",
    "DriverAssignmentOffered",
    "DriverAssignmentAccepted",
    "DispatchCompleted",
    "DispatchFailed",
    "ShipmentClosed",
}
REQUIRED_SUBSCRIPTIONS = {
    "telemetry-archive",
    "events-archive",
    "live-map",
    "geofence",
    "eta",
    "notification",
    "billing",
    "pod",
    "client-webhook",
    "driver-scoring",
    "legacy-writer",
}


def test_the_real_catalog_is_complete() -> None:
    catalog = load_catalog()
    assert set(catalog.event_types) >= REQUIRED_EVENT_TYPES
    assert set(catalog.event_types) == set(EVENT_TYPES)
    assert set(catalog.subscriptions) >= REQUIRED_SUBSCRIPTIONS
    assert {"vehicle.telemetry", "logistics.events"} <= set(catalog.topics)
    for name in REQUIRED_SUBSCRIPTIONS:
        assert catalog.subscriptions[name].dead_letter_topic, name
    reactors = {
        "eta",
        "notification",
        "billing",
        "pod",
        "client-webhook",
        "driver-scoring",
        "legacy-writer",
    }
    for name in reactors:
        delivery = catalog.subscriptions[name].delivery
        assert isinstance(delivery, PushDelivery) and delivery.service == name


def test_every_subscription_dead_letters_to_its_own_topic_kept_by_one_subscription() -> None:
    catalog = load_catalog()
    forwarding = [n for n, s in catalog.subscriptions.items() if s.dead_letter_topic]
    assert set(forwarding) == REQUIRED_SUBSCRIPTIONS
    for name in forwarding:
        topic = catalog.subscriptions[name].dead_letter_topic
        assert topic == f"{name}.dlq" and catalog.topics[topic].message_retention == 31 * 86400
        assert catalog.subscriptions_of(topic) == [f"{name}-dead-letters"]
        assert catalog.dead_letters_of(name) == f"{name}-dead-letters"
    with pytest.raises(CatalogError, match="no subscription 'invoicing'"):
        catalog.dead_letters_of("invoicing")
    with pytest.raises(CatalogError, match="has no dead-letter topic"):
        catalog.dead_letters_of("billing-dead-letters")


def test_fan_out_follows_the_filters() -> None:
    catalog = load_catalog()

    def receivers(event_type: str) -> set[str]:
        topic = catalog.event_types[event_type].topic
        return set(catalog.matching_subscriptions(topic, {"eventType": event_type}))

    assert receivers("ParcelDelivered") == {
        "events-archive",
        "eta",
        "notification",
        "billing",
        "pod",
        "client-webhook",
        "driver-scoring",
        "legacy-writer",
    }
    assert receivers("VehiclePing") == {"telemetry-archive", "live-map", "geofence"}
    assert receivers("ShipmentClosed") == {"events-archive", "billing", "client-webhook"}
    assert receivers("GeofenceCrossed") == {"events-archive", "eta"}
    assert "billing" not in receivers("RouteEtaUpdated")


def test_every_event_schema_is_a_record_with_an_id_and_a_time() -> None:
    catalog = load_catalog()
    for name in catalog.event_types:
        schema = json.loads(catalog.schema_path(name).read_text())
        names = [f["name"] for f in schema["fields"]]
        assert names[:2] == ["event_id", "occurred_at"], name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("5m", 300), ("2h", 7200), ("7d", 604800), (42, 42), ("1.5s", 1.5)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


# Broken catalogs ---------------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """Copy the real catalog and its schemas into tmp_path, apply ``change`` to the YAML."""

    def make(change: Callable[[dict[str, Any]], None]) -> Path:
        shutil.copytree(DEFAULT_CATALOG.parent, tmp_path / "schemas", dirs_exist_ok=True)
        path = tmp_path / "schemas" / "catalog.yaml"
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for each in changes:
            each(data)

    return change


def _rename(section: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data[section][new] = data[section].pop(old)

    return change


def _delete(*keys: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


BROKEN = {
    "unknown push target": (
        _set("subscriptions", "billing", "delivery", "service", value="invoicing"),
        "subscriptions.billing: push target 'invoicing' is not a known service",
    ),
    "filter names an unknown event type": (
        _set("subscriptions", "billing", "filter", value='attributes.eventType = "ParcelDeliverd"'),
        "subscriptions.billing.filter: event type 'ParcelDeliverd' is not published on logistics.events",
    ),
    "filter names an event type of another topic": (
        _set("subscriptions", "billing", "filter", value='attributes.eventType = "VehiclePing"'),
        "event type 'VehiclePing' is not published on logistics.events",
    ),
    "filter prefix matches nothing": (
        _set("subscriptions", "pod", "filter", value='hasPrefix(attributes.eventType, "Invoice")'),
        "subscriptions.pod.filter: no event type on logistics.events starts with 'Invoice'",
    ),
    "filter mixes AND and OR": (
        _set(
            "subscriptions", "pod", "filter", value="attributes:a AND attributes:b OR attributes:c"
        ),
        "subscriptions.pod.filter: invalid filter at column",
    ),
    "filter over 256 bytes": (
        _set(
            "subscriptions",
            "pod",
            "filter",
            value=" OR ".join(['attributes.eventType = "ParcelDelivered"'] * 7),
        ),
        "the limit is 256 bytes",
    ),
    "no dead-letter topic": (
        _delete("subscriptions", "eta", "dead_letter_topic"),
        "subscriptions.eta: every subscription needs a dead_letter_topic",
    ),
    "unknown dead-letter topic": (
        _set("subscriptions", "eta", "dead_letter_topic", value="nowhere.dlq"),
        "subscriptions.eta: dead_letter_topic 'nowhere.dlq' is not a known topic",
    ),
    "dead-letter topic is the source topic": (
        _set("subscriptions", "eta", "dead_letter_topic", value="logistics.events"),
        "dead_letter_topic must differ",
    ),
    "a dead-letter topic shared by two subscriptions": (
        _set("subscriptions", "billing", "dead_letter_topic", value="eta.dlq"),
        "subscriptions.eta: dead_letter_topic 'eta.dlq' is also the dead_letter_topic of "
        "subscriptions.billing: each subscription dead-letters to a topic of its own ('eta.dlq')",
    ),
    "a dead-letter topic not named after its subscription": (
        _both(
            _rename("topics", "billing.dlq", "invoices.dlq"),
            _set("subscriptions", "billing", "dead_letter_topic", value="invoices.dlq"),
            _set("subscriptions", "billing-dead-letters", "topic", value="invoices.dlq"),
        ),
        "subscriptions.billing: dead_letter_topic 'invoices.dlq' must be named 'billing.dlq'",
    ),
    "a dead-letter topic nobody keeps": (
        _delete("subscriptions", "billing-dead-letters"),
        "subscriptions.billing: no subscription keeps the dead letters of 'billing.dlq'",
    ),
    "a dead-letter topic kept by two subscriptions": (
        _set(
            "subscriptions",
            "billing-audit",
            value={"topic": "billing.dlq", "delivery": {"type": "pull", "consumer": "operator"}},
        ),
        "subscriptions.billing: dead-letter topic 'billing.dlq' is kept by 2 subscriptions "
        "(billing-dead-letters, billing-audit); exactly one, 'billing-dead-letters', may hold it",
    ),
    "a dead-letter subscription not named after its consumer": (
        _rename("subscriptions", "billing-dead-letters", "billing-dlq"),
        "subscriptions.billing-dlq: keeps the dead letters of subscriptions.billing: "
        "it must be named 'billing-dead-letters'",
    ),
    "a dead-letter subscription that dead-letters": (
        _both(
            _set("topics", "billing-dead-letters.dlq", value={"description": "letters of letters"}),
            _set(
                "subscriptions",
                "billing-dead-letters-dead-letters",
                value={
                    "topic": "billing-dead-letters.dlq",
                    "delivery": {"type": "pull", "consumer": "operator"},
                },
            ),
            _set(
                "subscriptions",
                "billing-dead-letters",
                "dead_letter_topic",
                value="billing-dead-letters.dlq",
            ),
        ),
        "subscriptions.billing-dead-letters: a dead-letter subscription has no dead_letter_topic",
    ),
    "an event type on a dead-letter topic": (
        _set("event_types", "SlaAtRisk", "topic", value="billing.dlq"),
        "event_types.SlaAtRisk: topic 'billing.dlq' is a dead-letter topic",
    ),
    "max delivery attempts below Pub/Sub's minimum": (
        _set("subscriptions", "eta", "max_delivery_attempts", value=3),
        "subscriptions.eta.max_delivery_attempts: Input should be greater than or equal to 5",
    ),
    "ack deadline above 600 s": (
        _set("subscriptions", "eta", "ack_deadline_seconds", value=601),
        "subscriptions.eta.ack_deadline_seconds",
    ),
    "backoff minimum above maximum": (
        _set(
            "subscriptions",
            "eta",
            "retry",
            value={"minimum_backoff": "60s", "maximum_backoff": "10s"},
        ),
        "subscriptions.eta.retry: Value error, minimum_backoff must not exceed maximum_backoff",
    ),
    "malformed duration": (
        _set("topics", "logistics.events", "message_retention", value="a week"),
        "topics.logistics.events.message_retention: Value error, 'a week' is not a duration",
    ),
    "unknown delivery type": (
        _set("subscriptions", "pod", "delivery", value={"type": "email", "to": "ops"}),
        "subscriptions.pod.delivery",
    ),
    "subscription on an unknown topic": (
        _set("subscriptions", "pod", "topic", value="logistics.evnets"),
        "subscriptions.pod: topic 'logistics.evnets' is not a known topic",
    ),
    "unknown producer": (
        _set("event_types", "ParcelDelivered", "producer", value="warehouse-scanner"),
        "event_types.ParcelDelivered: producer 'warehouse-scanner' is not a known service",
    ),
    "event type on an unknown topic": (
        _set("event_types", "ParcelDelivered", "topic", value="events"),
        "event_types.ParcelDelivered: topic 'events' is not a known topic",
    ),
    "missing schema file": (
        _set("event_types", "ParcelDelivered", "schema", value="avro/Nope.avsc"),
        "event_types.ParcelDelivered: schema",
    ),
    "subject field not in schema": (
        _set("event_types", "ParcelDelivered", "subject", value="parcel"),
        "event_types.ParcelDelivered: field 'parcel' is not in",
    ),
    "misspelt key": (
        _set("subscriptions", "eta", "dead_leter_topic", value="logistics.events.dlq"),
        "subscriptions.eta.dead_leter_topic: Extra inputs are not permitted",
    ),
    "trigger to an unknown service": (
        _set("triggers", "parcel-changes", "service", value="publisher"),
        "triggers.parcel-changes: service 'publisher' is not a known service",
    ),
    "trigger with an unknown event type": (
        _set(
            "triggers",
            "parcel-changes",
            "event_type",
            value="google.cloud.firestore.document.v1.touched",
        ),
        "triggers.parcel-changes: Value error, event_type must be one of",
    ),
    "push to a pipeline": (
        _set(
            "subscriptions",
            "pod",
            "delivery",
            value={"type": "push", "service": "geofence-pipeline"},
        ),
        "push target 'geofence-pipeline' is a pipeline, not an HTTP service",
    ),
    "push to a worker": (
        _set(
            "subscriptions", "pod", "delivery", value={"type": "push", "service": "live-map-writer"}
        ),
        "push target 'live-map-writer' is a worker, not an HTTP service",
    ),
    "a worker nothing starts": (
        _set("services", "live-map-writer", "min_instances", value=0),
        "services.live-map-writer: a worker serves no requests to start it",
    ),
    "a role of an unknown service": (
        _set("services", "live-map-writer", "part_of", value="map"),
        "services.live-map-writer: part_of 'map' is not a known service",
    ),
    "a role of another package": (
        _set("services", "live-map-writer", "part_of", value="command"),
        "part_of 'command' must be a service of the same package",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_catalog_is_refused_naming_file_and_entry(
    case: str, broken: Callable[[Callable[[dict[str, Any]], None]], Path]
) -> None:
    change, expected = BROKEN[case]
    path = broken(change)
    with pytest.raises(CatalogError) as raised:
        load_catalog(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_an_invalid_avro_schema_is_refused(
    broken: Callable[[Callable[[dict[str, Any]], None]], Path],
) -> None:
    path = broken(lambda data: None)
    schema_file = path.parent / "avro" / "SlaBreached.avsc"
    schema = json.loads(schema_file.read_text())
    schema["fields"][2]["type"] = "strnig"
    schema_file.write_text(json.dumps(schema))
    with pytest.raises(
        CatalogError,
        match=r"event_types\.SlaBreached: schema .*SlaBreached.avsc is not a valid Avro",
    ):
        load_catalog(path)


def test_a_schema_named_after_another_event_is_refused(
    broken: Callable[[Callable[[dict[str, Any]], None]], Path],
) -> None:
    path = broken(_set("event_types", "SlaBreached", "schema", value="avro/SlaAtRisk.avsc"))
    with pytest.raises(CatalogError, match="must be a record named 'SlaBreached'"):
        load_catalog(path)


def test_unreadable_catalogs(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such catalog file"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "catalog.yaml"
    bad.write_text("topics: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)
