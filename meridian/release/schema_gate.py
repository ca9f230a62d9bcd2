"""The schema gate: a changed Avro schema must be additive, or the release stops before a build.

Additive means both ways round: a reader of the new schema reads what was written with the old one
(consumers deployed before producers), and a reader of the old schema reads what is written with
the new one (producers deployed before consumers, and the messages retained on a topic for days).
It is checked with fastavro's own schema resolution, not a rule list: records generated from each
version (defaults, nulls, each end of every type's range, each enum symbol and union branch) are
written with ``schemaless_writer`` and read back with ``schemaless_reader(writer_schema=...,
reader_schema=...)``. A refusal names the field that breaks.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

_INT = (-(2**31), 2**31 - 1)
_LONG = (-(2**63), 2**63 - 1)


class BreakingSchemaChange(Exception):
    """A schema change that some reader cannot resolve; names the event type and the field."""

    def __init__(self, event_type: str, field: str, why: str) -> None:
        super().__init__(f"{event_type}: field {field!r} {why}")
        self.event_type = event_type
        self.field = field


def check_additive(event_type: str, old_text: str, new_text: str) -> None:
    """Raise BreakingSchemaChange unless every reader of either version reads data of the other."""
    old, new = _record(old_text), _record(new_text)
    pairs: tuple[tuple[dict[str, Any], dict[str, Any], str], ...] = (
        (old, new, "new readers"),
        (new, old, "old readers"),
    )
    for writer, reader, direction in pairs:
        for record in sample_records(writer):
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, writer, record)
            buffer.seek(0)
            try:
                fastavro.schemaless_reader(buffer, writer, reader)
            except (SchemaResolutionError, ValueError, TypeError, KeyError, EOFError) as e:
                field, why = _explain(writer, reader)
                raise BreakingSchemaChange(
                    event_type,
                    field,
                    f"{why}: {direction} cannot read data written with the "
                    f"{'old' if writer is old else 'new'} schema ({e})",
                ) from None


def _record(text: str) -> dict[str, Any]:
    parsed = fastavro.parse_schema(json.loads(text))
    if not isinstance(parsed, dict):
        raise ValueError("an event's schema is a record")
    return parsed


def sample_records(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A few records of a record schema: each field's default where it has one, then the low end of
    every type (nulls first in a union), then the high end (a union's last branch)."""
    yield {f["name"]: f["default"] if "default" in f else _value(f["type"], 0) for f in _fields(schema)}
    yield {f["name"]: _value(f["type"], 0) for f in _fields(schema)}
    yield {f["name"]: _value(f["type"], -1) for f in _fields(schema)}


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = schema["fields"]
    return fields


def _value(schema: Any, end: int) -> Any:
    """The low (``end=0``) or high (``end=-1``) value of a parsed schema."""
    if isinstance(schema, list):  # a union: its first branch (null, if any) or its last
        return _value(schema[end], end)
    if isinstance(schema, str):
        schema = {"type": schema}
    kind = schema["type"]
    if isinstance(kind, dict | list):
        return _value(kind, end)
    match kind:
        case "null":
            return None
        case "boolean":
            return end != 0
        case "int":
            return _INT[end]
        case "long":
            # timestamps stay within what a datetime holds when read back
            return _LONG[end] if "logicalType" not in schema else (0, 4_102_444_800_000_000)[end]
        case "float" | "double":
            return (-1.5e38, 1.5e38)[end] if kind == "float" else (-1.7e308, 1.7e308)[end]
        case "bytes":
            return (b"", b"\xff" * 16)[end]
        case "string":
            return ("", "z" * 64)[end]
        case "fixed":
            return bytes([0 if end == 0 else 255]) * schema["size"]
        case "enum":
            return schema["symbols"][end]
        case "array":
            return [] if end == 0 else [_value(schema["items"], end)]
        case "map":
            return {} if end == 0 else {"k": _value(schema["values"], end)}
        case "record" | "error":
            return {f["name"]: _value(f["type"], end) for f in _fields(schema)}
    raise ValueError(f"no sample for Avro type {kind!r}")


def _explain(writer: dict[str, Any], reader: dict[str, Any]) -> tuple[str, str]:
    """The first field that keeps ``reader`` from reading ``writer``'s data, and why."""
    written = {f["name"]: f for f in _fields(writer)}
    for field in _fields(reader):
        names = [field["name"], *field.get("aliases", [])]
        source = next((written[n] for n in names if n in written), None)
        if source is None:
            if "default" not in field:
                return field["name"], "is missing from the writer's schema and has no default"
            continue
        if _type_name(source["type"]) != _type_name(field["type"]):
            return field["name"], (
                f"changed type ({_type_name(source['type'])} to {_type_name(field['type'])})"
            )
    return "?", "does not resolve"


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_type_name(s) for s in schema) + "]"
    if isinstance(schema, dict):
        kind = schema["type"]
        if isinstance(kind, dict | list):
            return _type_name(kind)
        named = schema.get("name")
        return f"{kind} {named}" if named and kind in ("record", "enum", "fixed") else str(kind)
    return str(schema)
