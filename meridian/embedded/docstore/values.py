"""How the embedded store holds document values: JSON text with timestamps, decoded documents
kept for re-reads, and the update masks of its change records.

Timestamps are stored as ``{"__ts__": microseconds since the epoch}``. Field names matching
``__.*__`` are reserved by Firestore (and refused by ``meridian.documents.paths.check_fields``), so
the tag can never collide with user data. Firestore's value semantics (ordering, equality,
field-path edits) are the core's, in ``meridian/documents/values.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from meridian.documents.values import MISSING, equal, to_micros
from meridian.domain.errors import ValidationError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS = "__ts__"


_MICROSECOND = timedelta(0, 0, 1)  # built once: every timestamp of every write divides by it


def from_micros(micros: int) -> datetime:
    # Positional (days, seconds, microseconds): a third of the cost of the keyword form, and this
    # runs for every timestamp of every document read.
    return _EPOCH + timedelta(0, 0, micros)


def _default(value: Any) -> Any:
    if type(value) is datetime:  # nearly every call (the encoder asks only for non-JSON values)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return {_TS: (value - _EPOCH) // _MICROSECOND}
    if isinstance(value, datetime):
        return {_TS: to_micros(value)}
    if isinstance(value, tuple):
        return list(value)
    raise ValidationError(
        f"unsupported value of type {type(value).__name__}: use JSON values or datetime"
    )


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _TS in obj:
        return from_micros(obj[_TS])
    return obj


# Built once: ``json.dumps``/``json.loads`` with options build an encoder or decoder per call,
# which cost more than encoding a typical document. Without circular-reference markers the
# encoder keeps no state between calls (so threads may share it); data reaches it only through
# ``meridian.documents.values.clone``, which a circular structure never gets past.
_ENCODER = json.JSONEncoder(default=_default, allow_nan=False, separators=(",", ":"))
_encode_c = (
    c_make_encoder(None, _default, encode_basestring_ascii, None, ":", ",", False, False, False)
    if c_make_encoder is not None
    else None
)
_DECODER = json.JSONDecoder(object_hook=_hook)


def encode(data: Mapping[str, Any]) -> str:
    try:
        if _encode_c is not None:
            return "".join(_encode_c(data, 0))
        return _ENCODER.encode(data)
    except ValueError as e:
        # SQLite's JSON1 cannot read NaN/Infinity, so the embedded store refuses them.
        raise ValidationError(f"unsupported value: {e}") from e


def decode(text: str | None) -> dict[str, Any] | None:
    return None if text is None else _DECODER.decode(text)


class DecodedDocuments:
    """The decoded data of recently written or read documents, by path, each entry valid only
    for the exact stored text it was decoded from (or encoded to).

    A read-modify-write transaction (the live map's newest-position guard, every status move)
    reads back, nearly always, the text this same process wrote last; decoding it again cost
    more than the rest of the read and the SQL together. An entry is used only when the stored
    text is equal to its own, so one left by a rolled-back write, or outdated by another
    process's write, simply misses. The decoded values are shared and must not be changed:
    transactions hand their callers a clone. The entries are bounded by their total text
    length, the oldest written going first.

    ``max_chars=0`` keeps nothing, for a process that seldom reads back what it wrote: there the
    entries are only work for the garbage collector, whose full collections walk every one."""

    def __init__(self, max_chars: int = 8 * 2**20) -> None:
        self.max_chars = max_chars
        self._entries: dict[str, tuple[str, dict[str, Any]]] = {}
        self._chars = 0
        self._lock = threading.Lock()

    def decode(self, path: str, text: str) -> dict[str, Any]:
        entry = self._entries.get(path)
        if entry is not None and entry[0] == text:
            return entry[1]
        data: dict[str, Any] = _DECODER.decode(text)
        if self.max_chars:
            self.remember(path, text, data)
        return data

    def remember(self, path: str, text: str, data: dict[str, Any]) -> None:
        """Record what ``text`` decodes to (``data``, which nobody may change from now on)."""
        if not self.max_chars:
            return
        if len(text) > self.max_chars // 64:
            self.forget(path)  # a large document would push out many small ones
            return
        with self._lock:
            entries = self._entries
            old = entries.pop(path, None)  # re-inserted last: the oldest written go first
            self._chars += len(text) - (len(old[0]) if old else 0)
            entries[path] = (text, data)
            while self._chars > self.max_chars:
                oldest = entries.pop(next(iter(entries)))
                self._chars -= len(oldest[0])

    def forget(self, path: str) -> None:
        with self._lock:
            old = self._entries.pop(path, None)
            if old is not None:
                self._chars -= len(old[0])


@lru_cache(maxsize=4_096)  # the same few field names, in every update mask of every write
def _quote(part: str) -> str:
    return (
        part if part.isidentifier() else "`" + part.replace("\\", "\\\\").replace("`", "\\`") + "`"
    )


# Types whose Python inequality is Firestore inequality (not floats: NaN equals NaN there; not
# datetimes: a naive one is taken as UTC, so it can equal an aware one that Python calls unequal).
_PLAIN = frozenset({str, int, bool, type(None)})


def changed_paths(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Leaf field paths whose value differs: the update mask of a change record."""
    paths: list[str] = []
    # A rewrite usually keeps the fields it had, most of them unchanged: then one pass picks the
    # fields whose value is not of the same type and equal (the only ones the loop below does
    # not skip at once), and only those are sorted and looked at.
    if old.keys() == new.keys():
        keys = [k for k, b in new.items() if type(a := old[k]) is not type(b) or a != b]
        keys.sort()
    else:
        keys = sorted(old.keys() | new.keys())
    for key in keys:
        a, b = old.get(key, MISSING), new.get(key, MISSING)
        kind = type(a)
        if kind is type(b):
            if a == b:
                continue  # the common case, settled by one C-level comparison of the whole subtree
            if (
                kind in _PLAIN  # same plain type and unequal: no Firestore rule makes it equal
                or (kind is float and a == a and b == b)  # neither is NaN
                or (kind is datetime and a.tzinfo is not None and b.tzinfo is not None)
            ):
                paths.append(prefix + _quote(key))
                continue
            if kind is dict:
                paths.extend(changed_paths(a, b, prefix + _quote(key) + "."))
                continue
        path = prefix + _quote(key)
        if a is not None and b is not None and isinstance(a, Mapping) and isinstance(b, Mapping):
            paths.extend(changed_paths(a, b, path + "."))
        # A change of type is a change (even 1 to 1.0, which Firestore calls equal), so only
        # values of one type need Firestore's comparison: a field set or cleared (None to a
        # map, absent to a value) costs no ``sort_key`` of the map.
        elif kind is not type(b) or not equal(a, b):
            paths.append(path)
    return paths
