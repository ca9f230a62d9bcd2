"""The cheap checks give the same answers as the full rules: the document rules' paths and plainly
valid documents (``meridian.documents``, used by every store) and the embedded store's update
masks across type changes."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from meridian.documents.paths import check_document, check_document_path
from meridian.documents.values import clone
from meridian.domain.errors import LimitExceeded, ValidationError
from meridian.embedded.docstore.values import changed_paths, encode

AT = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("path", "collection"),
    [
        ("parcels/p-1", "parcels"),
        ("parcels/p-1/scans/s.1", "parcels/p-1/scans"),
        ("parcels/__p", "parcels"),  # starts with __ but does not end with it
        ("parcels/p__", "parcels"),
        ("parcels/...", "parcels"),
        ("parcels/" + "x" * 1500, "parcels"),
        ("parcels/" + "é" * 750, "parcels"),  # 1,500 bytes
    ],
)
def test_valid_document_paths(path: str, collection: str) -> None:
    assert check_document_path(path) == collection


@pytest.mark.parametrize(
    "path",
    [
        "parcels/__p-1__",
        "__parcels__/p-1",
        "parcels//p-1",
        "parcels/.",
        "parcels/../x/y",
        "parcels/" + "x" * 1501,
        "parcels/" + "é" * 751,  # 751 characters, 1,502 bytes
        "/".join(["c", "x" * 1400] * 5),  # every id within its limit, the name over 6 KiB
    ],
)
def test_invalid_document_paths(path: str) -> None:
    with pytest.raises(LimitExceeded):
        check_document_path(path)


def _nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        data = {"m": data}
    return data


@pytest.mark.parametrize(
    "data",
    [
        {"m": {"__x__": 1}},
        {"m": {"": 1}},
        {"l": [[1]]},
        {"l": [{"l": [[1]]}]},
        _nested(20),
    ],
)
def test_documents_breaking_a_field_rule_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises((LimitExceeded, ValidationError)):
        check_document("parcels/p-1", data, encode(data))


@pytest.mark.parametrize(
    "data",
    [
        {"at": AT, "stops": [{"at": AT}, {"at": AT}], "s": '[[ and "__x__" in a string'},
        {"m": {"__p": 1, "p__": 2}},
        {"l": [1, [2]][:1]},
        _nested(18),
    ],
)
def test_documents_within_the_rules_pass(data: dict[str, Any]) -> None:
    check_document("parcels/p-1", data, encode(data))


def test_the_mask_names_fields_that_change_type() -> None:
    old = {"pod": None, "at": None, "n": 1, "m": {"a": 1}, "l": [1], "gone": {"x": 1}}
    new = {"pod": {"ref": "x"}, "at": AT, "n": 1.0, "m": None, "l": (1,), "added": [1]}
    assert changed_paths(old, new) == ["added", "at", "gone", "l", "m", "n", "pod"]
    assert changed_paths(new, dict(new)) == []
    # Maps of different types are compared field by field.
    assert changed_paths({"m": {"a": 1, "b": 2}}, {"m": MappingProxyType({"a": 1, "b": 3})}) == [
        "m.b"
    ]


def test_clone_makes_plain_dicts_and_lists_of_any_mapping_or_sequence() -> None:
    original = MappingProxyType({"m": MappingProxyType({"t": (1, {"x": AT})}), "l": [[1], (2,)]})
    copy = clone(original)
    assert copy == {"m": {"t": [1, {"x": AT}]}, "l": [[1], [2]]}
    assert type(copy) is dict and type(copy["m"]) is dict and type(copy["m"]["t"]) is list
    assert copy["l"][0] is not original["l"][0]
