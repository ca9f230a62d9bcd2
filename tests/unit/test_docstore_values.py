"""Document values: their JSON form, copies, and update masks that follow Firestore's equality."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from meridian.domain.errors import ValidationError
from meridian.embedded.docstore.values import changed_paths, clone, decode, encode, to_micros


def test_the_mask_lists_only_values_firestore_considers_changed() -> None:
    old = {
        "status": "OUT_FOR_DELIVERY",
        "count": 1,
        "ratio": math.nan,
        "load": 1.5,
        "at": datetime(2026, 11, 21, 9, 30),  # naive: taken as UTC
        "flag": True,
        "m": {"by": "drv-1", "n": None},
    }
    new = {
        "status": "DELIVERED",
        "count": 1.0,  # equal in Firestore, but a change of type is still a change
        "ratio": math.nan,  # NaN equals NaN in Firestore
        "load": 2.5,
        "at": datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
        "flag": 1,  # but True is not 1
        "m": {"by": "drv-2", "n": None},
    }
    assert changed_paths(old, new) == ["count", "flag", "load", "m.by", "status"]


def test_documents_are_stored_as_compact_ascii_json_and_read_back_with_their_timestamps() -> None:
    at = datetime(2026, 11, 21, 9, 30, 0, 123456, tzinfo=UTC)
    data = {"name": "Ærø", "at": at, "stops": ({"at": at}, 2.5), "none": None}
    text = encode(data)
    assert text == json.dumps(
        {
            "name": "Ærø",
            "at": {"__ts__": to_micros(at)},
            "stops": [{"at": {"__ts__": to_micros(at)}}, 2.5],
            "none": None,
        },
        separators=(",", ":"),
    )
    assert decode(text) == {**data, "stops": [{"at": at}, 2.5]}
    with pytest.raises(ValidationError):
        encode({"ratio": math.inf})
    with pytest.raises(ValidationError):
        encode({"blob": b"bytes"})
    assert encode({"ok": 1}) == '{"ok":1}'  # a refusal leaves the shared encoder usable


def test_clone_copies_every_container_and_keeps_the_leaves() -> None:
    at = datetime(2026, 11, 21, tzinfo=UTC)
    original = {"m": {"l": [1, {"x": at}], "t": ("a", "b")}, "s": "v"}
    copy = clone(original)
    assert copy == {"m": {"l": [1, {"x": at}], "t": ["a", "b"]}, "s": "v"}
    copy["m"]["l"][1]["x"] = None
    assert original["m"]["l"][1]["x"] == at  # type: ignore[index]
