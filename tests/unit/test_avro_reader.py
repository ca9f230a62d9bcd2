"""The compiled Avro reader gives fastavro's records for every catalog schema it compiles, refuses
(so the caller falls back to fastavro) the schemas it does not read, and refuses a corrupt body
exactly when fastavro does (but for a varint longer than 64 bits, which fastavro wraps)."""

from __future__ import annotations

import io
import math
import random
import re
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.catalog import load_catalog
from meridian.codec.avro_reader import (
    compile_reader,
    fastavro_reader,
    record_reader,
    without_logical_types,
)
from meridian.domain.errors import DecodeError
from meridian.domain.events import EVENT_TYPES
from tests.strategies import model_strategy

CATALOG = load_catalog()
COMPILED = sorted(name for name, schema in CATALOG.schemas.items() if compile_reader(schema))


def encoded(name: str, record: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, CATALOG.schemas[name], record)
    return buffer.getvalue()


def fastavro_record(schema: Any, data: bytes) -> Any:
    buffer = io.BytesIO(data)
    record = schemaless_reader(buffer, parse_schema(schema), None)
    if buffer.tell() != len(data):
        raise EOFError("bytes left over")
    return record


def test_the_flat_event_schemas_compile_and_the_others_fall_back() -> None:
    assert {"VehiclePing", "ParcelDelivered", "GeofenceCrossed"} <= set(COMPILED)
    # Arrays are not compiled: these keep fastavro.
    assert compile_reader(CATALOG.schemas["ShipmentCreated"]) is None
    assert (
        compile_reader({"type": "record", "name": "R", "fields": [{"name": "b", "type": "bytes"}]})
        is None
    )
    not_compiled = set(CATALOG.schemas) - set(COMPILED)
    assert all("array" in repr(CATALOG.schemas[name]) for name in not_compiled), not_compiled


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_every_event_type_reads_as_fastavro_reads_it(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(CATALOG.schemas)))
    event = data.draw(model_strategy(EVENT_TYPES[name]))
    body = encoded(name, event.model_dump(mode="python"))
    schema = CATALOG.schemas[name]
    expected = fastavro_record(schema, body)
    assert record_reader(schema)(body) == expected
    if name in COMPILED:
        compiled = compile_reader(schema)
        assert compiled is not None and compiled(body) == expected
    plain = record_reader(schema, logical_types=False)(body)
    assert plain == fastavro_record(without_logical_types(schema), body)


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_corrupt_bodies_are_refused_exactly_when_fastavro_refuses_them(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(COMPILED))
    schema = CATALOG.schemas[name]
    compiled = compile_reader(schema)
    assert compiled is not None
    valid = encoded(name, data.draw(model_strategy(EVENT_TYPES[name])).model_dump(mode="python"))
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(100):
        body = bytearray(valid)
        for _ in range(rnd.randint(1, 3)):
            roll = rnd.random() if body else 1.0
            if roll < 0.5:
                body[rnd.randrange(len(body))] = rnd.randrange(256)
            elif roll < 0.75:
                del body[rnd.randrange(len(body)) :]
            else:
                body.append(rnd.randrange(256))
        corrupt = bytes(body)
        try:
            expected = fastavro_record(schema, corrupt)
        except Exception:
            expected = None
        try:
            got = compiled(corrupt)
        except DecodeError as refusal:
            if "longer than 64 bits" in str(refusal):
                continue  # not an Avro long: fastavro wraps it into some number, this refuses
            if re.search(r"(enum index|union branch) -\d", str(refusal)):
                continue  # fastavro takes a negative index from the end (Python lists); this refuses
            got = None
        assert same(got, expected), (name, corrupt.hex())


def same(a: object, b: object) -> bool:
    """Equality in which NaN equals NaN: a corrupted double may decode to one on both sides."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_the_fastavro_fallback_has_the_compiled_readers_contract(data: st.DataObject) -> None:
    schema = CATALOG.schemas["ShipmentCreated"]
    read = fastavro_reader(schema)
    event = data.draw(model_strategy(EVENT_TYPES["ShipmentCreated"]))
    body = encoded("ShipmentCreated", event.model_dump(mode="python"))
    assert read(body) == fastavro_record(schema, body)
    with pytest.raises(DecodeError, match="ShipmentCreated: 1 bytes left over"):
        read(body + b"\x00")
    with pytest.raises(DecodeError, match="not a valid ShipmentCreated"):
        read(body[: len(body) // 2])
