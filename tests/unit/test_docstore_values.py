"""Document values: their JSON form, copies, and update masks that follow Firestore's equality."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from meridian.documents.values import clone, to_micros
from meridian.domain.errors import ValidationError
from meridian.embedded.docstore.values import DecodedDocuments, changed_paths, decode, encode


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


def test_decoded_documents_serve_only_the_exact_text_they_were_decoded_from() -> None:
    decoded = DecodedDocuments()
    text = encode({"lat": 1.0})
    first = decoded.decode("live_map/veh-1", text)
    assert decoded.decode("live_map/veh-1", text) is first  # not decoded again
    assert decoded.decode("live_map/veh-1", encode({"lat": 2.0})) == {"lat": 2.0}
    remembered = {"lat": 3.0}
    decoded.remember("live_map/veh-1", encode(remembered), remembered)
    assert decoded.decode("live_map/veh-1", encode({"lat": 3.0})) is remembered
    decoded.forget("live_map/veh-1")
    assert decoded.decode("live_map/veh-1", encode({"lat": 3.0})) is not remembered


def test_decoded_documents_keep_within_their_size_the_most_recently_written() -> None:
    decoded = DecodedDocuments(max_chars=64 * 40)
    texts = {f"d/{i}": encode({"i": i, "pad": "x" * 20}) for i in range(200)}
    for path, text in texts.items():
        decoded.decode(path, text)
    kept = [path for path, text in texts.items() if decoded._entries.get(path, ("",))[0] == text]
    assert kept == list(texts)[-len(kept) :]
    assert sum(len(texts[p]) for p in kept) <= 64 * 40
    huge = encode({"pad": "x" * 64 * 40})
    decoded.decode("d/huge", huge)
    assert "d/huge" not in decoded._entries  # would push out many small ones


def test_the_mask_names_added_and_removed_fields_and_quotes_odd_names() -> None:
    old = {"kept": 1, "gone": 2, "a.b": {"x": 1}}
    new = {"kept": 1, "added": 3, "a.b": {"x": 2}}
    assert changed_paths(old, new) == ["`a.b`.x", "added", "gone"]
    assert changed_paths(new, new) == []


def test_decoded_documents_of_size_zero_keep_nothing() -> None:
    decoded = DecodedDocuments(max_chars=0)
    text = encode({"lat": 1.0})
    first = decoded.decode("live_map/veh-1", text)
    assert first == {"lat": 1.0}
    assert decoded.decode("live_map/veh-1", text) is not first  # decoded again: nothing kept
    decoded.remember("live_map/veh-1", text, first)
    assert decoded._entries == {}
