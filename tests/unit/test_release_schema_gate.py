"""The schema gate (meridian/release/schema_gate.py) on a real schema of the catalog: additive
changes pass, breaking ones are refused naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import fastavro
import pytest

from meridian.catalog import load_catalog
from meridian.release.schema_gate import BreakingSchemaChange, check_additive, sample_records

OLD = load_catalog().schema_path("ParcelDelivered").read_text()


def _changed(change: Callable[[dict[str, Any]], object]) -> str:
    schema = json.loads(OLD)
    change(schema)
    return json.dumps(schema)


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_an_added_optional_field_with_a_default_passes() -> None:
    note = {"name": "note", "type": ["null", "string"], "default": None}
    check_additive("ParcelDelivered", OLD, _changed(lambda s: s["fields"].append(note)))
    check_additive("ParcelDelivered", OLD, OLD)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s["fields"].remove(_field(s, "driver_id")), "driver_id"),
        (lambda s: _field(s, "driver_id").update(name="courier_id"), "courier_id"),
        (lambda s: _field(s, "lat").update(type="string"), "lat"),
        (lambda s: s["fields"].append({"name": "tip", "type": "long"}), "tip"),
    ],
    ids=["removed field", "renamed without alias", "type change", "added without default"],
)
def test_a_breaking_change_is_refused_naming_the_field(
    change: Callable[[dict[str, Any]], object], field: str
) -> None:
    with pytest.raises(BreakingSchemaChange) as refused:
        check_additive("ParcelDelivered", OLD, _changed(change))
    assert refused.value.field == field
    assert f"ParcelDelivered: field {field!r}" in str(refused.value)


def test_the_generated_records_are_valid_and_cover_defaults_nulls_and_both_ends() -> None:
    schema = fastavro.parse_schema(json.loads(OLD))
    records = list(sample_records(schema))
    assert all(fastavro.validate(r, schema) for r in records)
    assert records[0]["route_id"] is None and records[-1]["route_id"] == "z" * 64
    assert {r["lat"] for r in records} == {-1.7e308, 1.7e308}
