"""Avro encoding of domain events, and their mapping to Pub/Sub messages and CloudEvents.

Encoding validates against the event's schema first, so a bad event never leaves the process.
Decoding either returns a whole, valid event or raises DecodeError; never half an event.
Both directions use the compiled Avro writer and reader (``avro_writer``, ``avro_reader``) for
the schemas they compile, and fastavro for the rest. The topic an event is published to is its
catalog entry's (``topic_of``, ``by_topic``): no service names a topic of its own.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from fastavro import schemaless_writer
from fastavro.validation import validate
from pydantic import ValidationError as PydanticValidationError

from meridian.catalog import Catalog, EventTypeSpec
from meridian.codec.avro_reader import RecordReader, record_reader
from meridian.codec.avro_writer import compile_writer
from meridian.domain.errors import CatalogError, DecodeError, ValidationError
from meridian.domain.events import EVENT_TYPES, DomainEvent
from meridian.observability import current_traceparent
from meridian.ports import Message

CLOUDEVENT_TYPE = re.compile(r"^io\.meridian\.([A-Za-z]+)\.v(\d+)$")
AVRO_CONTENT_TYPE = "application/avro"


@dataclass(frozen=True, slots=True)
class _MessageShape:
    """What the Pub/Sub messages of one event type take from its catalog entry, kept in the form
    building each message reads."""

    event_type: str
    version: str
    source: str
    subject: str
    optional: tuple[tuple[str, str], ...]  # (attribute, field) pairs, left out when None
    ordering_key: str | None

    @classmethod
    def of(cls, event_type: str, spec: EventTypeSpec) -> _MessageShape:
        return cls(
            event_type=event_type,
            version=str(spec.version),
            source=spec.producer,
            subject=spec.subject,
            optional=tuple(spec.attributes.items()),
            ordering_key=spec.ordering_key,
        )

    def attributes(self, record: Mapping[str, Any], traceparent: str | None) -> dict[str, str]:
        attributes = {
            "eventType": self.event_type,
            "eventId": record["event_id"],
            "schemaVersion": self.version,
            "source": self.source,
            "subject": str(record[self.subject]),
        }
        for name, field in self.optional:
            value = record[field]
            if value is not None:
                attributes[name] = str(value)
        if traceparent:
            attributes["traceparent"] = traceparent
        return attributes


class EventCodec:
    """Encodes and decodes every event type of the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        missing = sorted(set(catalog.event_types) - set(EVENT_TYPES))
        if missing:
            raise CatalogError(
                f"{catalog.path}: event_types {', '.join(missing)} have no class in meridian.domain.events"
            )
        self._catalog = catalog
        self._schemas = catalog.schemas
        self._writers = {name: compile_writer(schema) for name, schema in self._schemas.items()}
        self._readers: dict[str, RecordReader] = {
            name: record_reader(schema) for name, schema in self._schemas.items()
        }
        self._shapes = {
            name: _MessageShape.of(name, spec) for name, spec in catalog.event_types.items()
        }
        self._topics = {name: spec.topic for name, spec in catalog.event_types.items()}

    # Topics --------------------------------------------------------------------------------------

    def topic_of(self, event_type: str) -> str:
        """The topic the catalog publishes ``event_type`` on."""
        return self._topics[event_type]

    def by_topic(self, messages: Iterable[Message]) -> dict[str, list[Message]]:
        """Event messages (this codec's, with their ``eventType``) grouped by the topic each is
        published on, in their order: one publish call per topic. One dict look-up per
        message."""
        topics = self._topics
        grouped: dict[str, list[Message]] = {}
        for message in messages:
            topic = topics[message.attributes["eventType"]]
            batch = grouped.get(topic)
            if batch is None:
                grouped[topic] = [message]
            else:
                batch.append(message)
        return grouped

    # Avro body -----------------------------------------------------------------------------------

    def encode(self, event: DomainEvent) -> bytes:
        return self.encode_record(event.event_type, event.model_dump(mode="python"))

    def encode_record(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        """The Avro body of an event given as its fields (what ``model_dump`` returns).

        For producers that hold already validated fields, not a model: building and dumping a
        model per ping cost a telemetry batch more than the encoding itself. The schema is still
        enforced: the writer refuses a value of the wrong type."""
        writer = self._writers.get(event_type)
        if writer is not None:
            try:
                return writer(record)
            except Exception:  # fastavro, below, writes the record or explains why not
                pass
        schema = self._schema(event_type)
        buffer = io.BytesIO()
        try:
            # The full validator is ~4x slower than the writer, so it runs only to explain a
            # refusal.
            schemaless_writer(buffer, schema, record)
        except Exception as refusal:
            why = _explained(refusal, record, schema)
            raise ValidationError(f"{event_type} does not match its schema: {why}") from None
        return buffer.getvalue()

    def decode(self, event_type: str, data: bytes) -> DomainEvent:
        read = self._readers.get(event_type)
        if read is None:
            raise DecodeError(f"unknown event type {event_type!r}")
        record = read(data)  # DecodeError on a corrupt body or bytes left over
        try:
            return EVENT_TYPES[event_type].model_validate(record)
        except PydanticValidationError as e:
            raise DecodeError(f"body is not a valid {event_type}: {e}") from None

    # Pub/Sub messages ----------------------------------------------------------------------------

    def attributes(self, event: DomainEvent, traceparent: str | None = None) -> dict[str, str]:
        return self.record_attributes(
            event.event_type, event.model_dump(mode="python"), traceparent
        )

    def record_attributes(
        self, event_type: str, record: Mapping[str, Any], traceparent: str | None = None
    ) -> dict[str, str]:
        """The message attributes of an event given as its fields (see ``encode_record``)."""
        return self._shapes[event_type].attributes(record, traceparent or current_traceparent())

    def to_message(self, event: DomainEvent, traceparent: str | None = None) -> Message:
        return self.record_message(event.event_type, event.model_dump(mode="python"), traceparent)

    def record_message(
        self, event_type: str, record: Mapping[str, Any], traceparent: str | None = None
    ) -> Message:
        """``to_message`` for an event given as its fields (see ``encode_record``)."""
        shape = self._shapes[event_type]
        return Message(
            self.encode_record(event_type, record),
            shape.attributes(record, traceparent or current_traceparent()),
            str(record[shape.ordering_key]) if shape.ordering_key else "",
        )

    def record_messages(
        self,
        event_type: str,
        records: Iterable[Mapping[str, Any]],
        traceparent: str | None = None,
    ) -> list[Message]:
        """``record_message`` for a batch of events of one type, all in the same trace.

        The catalog entry and the trace are looked up once for the batch, not once per message:
        the telemetry ingest builds a hundred messages per request."""
        traceparent = traceparent or current_traceparent()
        shape = self._shapes[event_type]
        encode, attributes, ordering_key = self.encode_record, shape.attributes, shape.ordering_key
        if not ordering_key:
            return [Message(encode(event_type, r), attributes(r, traceparent)) for r in records]
        return [
            Message(encode(event_type, r), attributes(r, traceparent), str(r[ordering_key]))
            for r in records
        ]

    def from_message(self, data: bytes, attributes: Mapping[str, str]) -> DomainEvent:
        event_type = attributes.get("eventType")
        if not event_type:
            raise DecodeError("message has no eventType attribute")
        self._check_version(event_type, attributes.get("schemaVersion"))
        event = self.decode(event_type, data)
        if "eventId" in attributes and attributes["eventId"] != event.event_id:
            raise DecodeError(
                f"eventId attribute {attributes['eventId']!r} differs from the body's {event.event_id!r}"
            )
        return event

    # CloudEvents ---------------------------------------------------------------------------------

    def to_cloudevent(self, event: DomainEvent, traceparent: str | None = None) -> CloudEvent:
        spec = self._catalog.event_types[event.event_type]
        attributes: dict[str, Any] = {
            "type": f"io.meridian.{event.event_type}.v{spec.version}",
            "source": f"//meridian/{spec.producer}",
            "id": event.event_id,
            "subject": str(getattr(event, spec.subject)),
            "time": event.occurred_at,
            "datacontenttype": AVRO_CONTENT_TYPE,
            "dataschema": spec.schema_file,
        }
        traceparent = traceparent or current_traceparent()
        if traceparent:
            attributes["traceparent"] = traceparent
        return CloudEvent(attributes, self.encode(event))

    def from_cloudevent(self, cloudevent: CloudEvent) -> DomainEvent:
        attributes = cloudevent.get_attributes()
        match = CLOUDEVENT_TYPE.match(str(attributes.get("type")))
        if not match:
            raise DecodeError(
                f"CloudEvent type {attributes.get('type')!r} is not a Meridian event type"
            )
        event_type, version = match.groups()
        self._check_version(event_type, version)
        data = cloudevent.get_data()
        if not isinstance(data, bytes | bytearray):
            raise DecodeError(f"CloudEvent {attributes.get('id')} carries no binary Avro data")
        event = self.decode(event_type, bytes(data))
        if event.event_id != attributes.get("id"):
            raise DecodeError(
                f"CloudEvent id {attributes.get('id')!r} differs from the body's event_id"
            )
        return event

    # ---------------------------------------------------------------------------------------------

    def _schema(self, event_type: str) -> dict[str, Any]:
        try:
            return self._schemas[event_type]
        except KeyError:
            raise ValidationError(f"unknown event type {event_type!r}") from None

    def _check_version(self, event_type: str, version: str | None) -> None:
        spec = self._catalog.event_types.get(event_type)
        if spec is None:
            raise DecodeError(f"unknown event type {event_type!r}")
        if version is not None and version != str(spec.version):
            raise DecodeError(
                f"{event_type} schema version {version} is not the version this service reads "
                f"({spec.version}); deploy the newer schema first"
            )


def _explained(refusal: Exception, record: Mapping[str, Any], schema: dict[str, Any]) -> Exception:
    """fastavro's validator's account of why the writer refused ``record``: it lists every bad
    field, where the writer names only the first thing it tripped on."""
    try:
        validate(record, schema, raise_errors=True)
    except Exception as detail:  # fastavro.validation.ValidationError
        return detail
    return refusal
