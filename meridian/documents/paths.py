"""Firestore's naming and size rules (reference §7.3): what every DocumentStore refuses.

Both adapters (``meridian/embedded/docstore`` and ``meridian/gcp/firestore.py``) and the unit
tests' fake check these before writing, so a document the embedded runtime refuses is refused the
same way in production, and emulators that do not enforce them still behave like the real service.
The cheap paths (a short ASCII path skips the segment walk, a plainly valid document's JSON text
skips the field walk and the size sum) were measured on the embedded store's transactions, where
every read and write checks its path and every write its document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from meridian.domain.errors import FieldError, LimitExceeded, ValidationError

MAX_DOCUMENT_BYTES = 1_048_576  # 1 MiB
MAX_ID_BYTES = 1_500
MAX_NAME_BYTES = 6 * 1024
MAX_FIELD_PATH_BYTES = 1_500
MAX_DEPTH = 20
_RESERVED = re.compile(r"^__.*__$")
# An ASCII path this long (one byte a character) is within both byte limits, whatever its ids.
_SURELY_SHORT_PATH = min(MAX_ID_BYTES, MAX_NAME_BYTES)


def _check_segments(path: str, what: str) -> list[str]:
    if not path or path.startswith("/") or path.endswith("/"):
        raise LimitExceeded(
            f"invalid {what} path {path!r}: it must not be empty or start/end with '/'"
        )
    segments = path.split("/")
    if (
        path.isascii()
        and len(path) <= _SURELY_SHORT_PATH
        and "__" not in path
        and "" not in segments
        and "." not in segments
        and ".." not in segments
    ):
        return segments  # the usual path breaks none of the rules below: skip the walk
    for segment in segments:
        if segment == "":
            raise LimitExceeded(f"invalid {what} path {path!r}: empty segment")
        if segment in (".", ".."):
            raise LimitExceeded(f"invalid {what} path {path!r}: an id may not be '.' or '..'")
        if _RESERVED.match(segment):
            raise LimitExceeded(f"invalid {what} path {path!r}: ids matching __.*__ are reserved")
        if len(segment.encode()) > MAX_ID_BYTES:
            raise LimitExceeded(
                f"invalid {what} path {path!r}: an id is limited to {MAX_ID_BYTES:,} bytes"
            )
    if len(path.encode()) > MAX_NAME_BYTES:
        raise LimitExceeded(f"{what} path is longer than the {MAX_NAME_BYTES:,}-byte name limit")
    return segments


@lru_cache(maxsize=65_536)  # every read and write checks its path; hot documents repeat
def check_document_path(path: str) -> str:
    """Validate a document path (even number of segments) and return its collection path."""
    segments = _check_segments(path, "document")
    if len(segments) % 2:
        raise LimitExceeded(
            f"invalid document path {path!r}: it needs an even number of segments (collection/id)"
        )
    return path.rsplit("/", 1)[0]


def check_collection_path(path: str) -> str:
    """Validate a collection path (odd number of segments) and return it."""
    segments = _check_segments(path, "collection")
    if len(segments) % 2 == 0:
        raise LimitExceeded(f"invalid collection path {path!r}: it needs an odd number of segments")
    return path


def collection_id(collection_path: str) -> str:
    """The last segment: what a TTL policy (per collection group) is keyed by."""
    return collection_path.rsplit("/", 1)[-1]


@lru_cache(maxsize=4_096)
def _split_field_path(field_path: str) -> tuple[str, ...]:
    return tuple(_split(field_path))


def split_field_path(field_path: str) -> list[str]:
    return list(_split_field_path(field_path))


def _split(field_path: str) -> list[str]:
    """``a.b.c`` → ``[a, b, c]``; a segment in backticks may contain dots (`` `a.b`.c ``)."""
    if not field_path:
        raise ValidationError("a field path may not be empty")
    if len(field_path.encode()) > MAX_FIELD_PATH_BYTES:
        raise LimitExceeded(f"field path is longer than {MAX_FIELD_PATH_BYTES:,} bytes")
    parts: list[str] = []
    current, quoted, i = "", False, 0
    while i < len(field_path):
        ch = field_path[i]
        if ch == "`":
            quoted = not quoted
        elif ch == "\\" and quoted and i + 1 < len(field_path):
            i += 1
            current += field_path[i]
        elif ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    if quoted or any(p == "" for p in parts):
        raise ValidationError(f"invalid field path {field_path!r}")
    return parts


def check_fields(data: Mapping[str, Any], depth: int = 0) -> None:
    """Field names: non-empty, not ``__.*__`` (reserved); maps and arrays nested ≤ 20 deep."""
    if depth >= MAX_DEPTH:
        raise LimitExceeded(f"maps and arrays may be nested at most {MAX_DEPTH} deep")
    for key, value in data.items():
        if not isinstance(key, str) or key == "":
            raise ValidationError(
                "field names must be non-empty strings", [FieldError(str(key), "bad name")]
            )
        if _RESERVED.match(key):
            raise ValidationError(f"field name {key!r} is reserved (names matching __.*__)")
        _check_value(value, depth + 1)


def _check_value(value: Any, depth: int) -> None:
    if isinstance(value, Mapping):
        check_fields(value, depth)
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise LimitExceeded(f"maps and arrays may be nested at most {MAX_DEPTH} deep")
        for item in value:
            if isinstance(item, list | tuple):
                raise ValidationError("an array may not directly contain another array")
            _check_value(item, depth + 1)
    elif value is not None and not isinstance(value, bool | int | float | str | datetime):
        raise ValidationError(
            f"unsupported value of type {type(value).__name__}: use JSON values or datetime"
        )


def _value_size(value: Any) -> int:
    # Storage sizes from Firestore's "storage size calculations" page.
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | datetime):
        return 8
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, Mapping):
        return sum(len(str(k).encode()) + 1 + _value_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_value_size(v) for v in value)
    return 8


def document_size(path: str, data: Mapping[str, Any]) -> int:
    """Firestore's storage size of a document: its name, its fields, plus 32 bytes."""
    name = sum(len(s.encode()) + 1 for s in path.split("/")) + 16
    return name + _value_size(data) + 32


# A stored value never takes more than 8 times its JSON text (the worst case is a one-digit number,
# 1 byte of JSON and 8 of storage), so a document whose JSON is under this cannot reach 1 MiB.
_SURELY_SMALL_JSON = MAX_DOCUMENT_BYTES // 8 - 1024


# How the embedded store's JSON text writes a timestamp ({"__ts__": micros}, see
# meridian/embedded/docstore/values.py): not a user field name, so the cheap check looks past it.
_TIMESTAMP_TAG = '"__ts__"'


def _nested_within_limit(value: dict[str, Any] | list[Any] | tuple[Any, ...], depth: int) -> bool:
    """Whether no map or array in ``value`` (itself at ``depth``) is nested ``MAX_DEPTH`` deep: a
    walk of the containers only, far cheaper than ``check_fields``, which visits every name and
    value. Only for data the store could serialise, whose containers are dicts, lists and tuples."""
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, dict | list | tuple) and (
            depth + 1 >= MAX_DEPTH or not _nested_within_limit(item, depth + 1)
        ):
            return False
    return True


def _plainly_valid(json_text: str, data: Mapping[str, Any]) -> bool:
    """True when the document (``data``, serialised as ``json_text``) plainly breaks no field
    rule: no reserved (``"__…``) or empty name, no array directly in an array, no nesting 20 deep.
    Anything else gets the full walk (which also settles these texts appearing inside string
    values)."""
    if '"__' in json_text and '"__' in json_text.replace(_TIMESTAMP_TAG, ""):
        return False
    if '"":' in json_text:
        return False
    # Most documents hold no array at all: one search for a character then settles both checks
    # of arrays.
    arrays = "[" in json_text
    if arrays and "[[" in json_text:
        return False
    # Nesting can be no deeper than the number of opening brackets, strings included: most
    # documents have too few to reach the limit, and counting is far cheaper than any walk.
    if json_text.count("{") + (json_text.count("[") if arrays else 0) <= MAX_DEPTH - 1:
        return True
    # A bigger document (a route board: 25 stops, each with its timestamps) is walked, but only
    # its maps and arrays: scanning its text for brackets outside strings cost more than that.
    return isinstance(data, dict) and _nested_within_limit(data, 0)


def check_document(path: str, data: Mapping[str, Any], json_text: str | None = None) -> None:
    """Field rules and the 1 MiB document limit, raising LimitExceeded that names the limit.
    ``json_text`` (the document as compact JSON, timestamps written as ``{"__ts__": …}``, when the
    caller has it: the embedded store's encoding) lets both checks skip their walk for the common,
    plainly valid and far-below-the-limit document."""
    if json_text is None or not _plainly_valid(json_text, data):
        check_fields(data)
    if json_text is not None and len(json_text) < _SURELY_SMALL_JSON:
        return
    size = document_size(path, data)
    if size > MAX_DOCUMENT_BYTES:
        raise LimitExceeded(
            f"document {path} would be {size:,} bytes; the maximum document size is 1 MiB "
            f"({MAX_DOCUMENT_BYTES:,} bytes)"
        )
