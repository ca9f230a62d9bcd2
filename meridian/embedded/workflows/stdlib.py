"""The standard library subset (reference §6.7) callable from expressions and from ``call:``.

Functions with side effects or waits (``http.*``, ``sys.sleep``, ``sys.log``, ``events.*``) are
not here: they are call steps, run by the interpreter (``effects.py``).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import re
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from .errors import builtin, key_error, tags_of, type_error, value_error
from .expressions import PredicateRef, is_number, to_string, type_name

_MISSING = object()


class Runtime(Protocol):
    """What the few context-dependent functions read from the running execution."""

    def env(self, name: str) -> str | None: ...

    def now(self) -> float: ...


@dataclass(frozen=True)
class Function:
    """A standard function: ``params`` name its arguments for ``call: f`` + ``args: {…}``;
    the first ``required`` are mandatory."""

    name: str
    fn: Callable[..., Any]
    params: tuple[str, ...]
    required: int
    needs_runtime: bool = False


def _len(value: Any) -> int:
    if isinstance(value, str | list | dict | bytes):
        return len(value)
    raise type_error(f"len() needs a string, bytes, list or map, got {type_name(value)}")


def _map(value: Any, fn: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise type_error(f"{fn}() needs a map, got {type_name(value)}")
    return value


def _str(value: Any, fn: str) -> str:
    if not isinstance(value, str):
        raise type_error(f"{fn}() needs a string, got {type_name(value)}")
    return value


def _keys(value: Any) -> list[str]:
    return list(_map(value, "keys"))


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise type_error("int() does not take a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)  # truncates toward zero, as Workflows does
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                return int(float(value))
            except ValueError:
                raise value_error(f"cannot convert {value!r} to int") from None
    raise type_error(f"int() does not take {type_name(value)}")


def _to_double(value: Any) -> float:
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise value_error(f"cannot convert {value!r} to double") from None
    raise type_error(f"double() does not take {type_name(value)}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return value.lower() == "true"
    raise value_error(f"cannot convert {value!r} to boolean")


def _map_get(value: Any, keys: Any) -> Any:
    current = _map(value, "map.get")
    path = keys if isinstance(keys, list) else [keys]
    result: Any = current
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def _map_delete(value: Any, key: Any) -> dict[str, Any]:
    result = dict(_map(value, "map.delete"))
    result.pop(key, None)
    return result


def _map_merge(first: Any, second: Any) -> dict[str, Any]:
    return {**_map(first, "map.merge"), **_map(second, "map.merge")}


def _map_merge_nested(first: Any, second: Any) -> dict[str, Any]:
    result = copy.deepcopy(_map(first, "map.merge_nested"))
    for key, value in _map(second, "map.merge_nested").items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _map_merge_nested(result[key], value)
        else:
            result[key] = value
    return result


def _list(value: Any, fn: str) -> list[Any]:
    if not isinstance(value, list):
        raise type_error(f"{fn}() needs a list, got {type_name(value)}")
    return value


def _find_all(source: Any, substr: Any) -> list[dict[str, Any]]:
    text, needle = _str(source, "text.find_all"), _str(substr, "text.find_all")
    found, start = [], 0
    while needle and (at := text.find(needle, start)) >= 0:
        found.append({"index": at, "match": needle})
        start = at + len(needle)
    return found


def _find_all_regex(source: Any, regexp: Any) -> list[dict[str, Any]]:
    text = _str(source, "text.find_all_regex")
    return [{"index": m.start(), "match": m.group(0)} for m in re.finditer(regexp, text)]


def _substring(source: Any, start: Any, end: Any) -> str:
    text = _str(source, "text.substring")
    return text[max(0, int(start)) : max(0, int(end))]


def _json_decode(data: Any) -> Any:
    raw = data.decode() if isinstance(data, bytes) else _str(data, "json.decode")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise value_error(f"json.decode: {e}") from None


def _json_text(data: Any) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    except TypeError as e:
        raise type_error(f"json.encode: {e}") from None


def _time_format(seconds: Any, timezone: Any = "UTC") -> str:
    if not is_number(seconds):
        raise type_error(f"time.format() needs seconds, got {type_name(seconds)}")
    moment = datetime.fromtimestamp(float(seconds), UTC)
    if timezone in ("UTC", "Z", None):
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.astimezone(ZoneInfo(str(timezone))).isoformat(timespec="microseconds")


def _time_parse(value: Any) -> float:
    text = _str(value, "time.parse")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise value_error(f"time.parse: not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _b64encode(data: Any, padding: Any = True) -> str:
    raw = data if isinstance(data, bytes) else _str(data, "base64.encode").encode()
    text = base64.b64encode(raw).decode()
    return text if padding else text.rstrip("=")


def _b64decode(data: Any, padding: Any = True) -> bytes:
    text = _str(data, "base64.decode")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _bytes(data: Any) -> bytes:
    return data if isinstance(data, bytes) else _str(data, "hash").encode()


def _checksum(data: Any, algorithm: Any) -> bytes:
    return hashlib.new(str(algorithm).lower().replace("-", ""), _bytes(data)).digest()


def _hmac(key: Any, data: Any, algorithm: Any) -> bytes:
    name = str(algorithm).lower().replace("-", "")
    return hmac.new(_bytes(key), _bytes(data), name).digest()


def _math(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def apply(*args: Any) -> Any:
        for a in args:
            if not is_number(a):
                raise type_error(f"{name}() needs numbers, got {type_name(a)}")
        return fn(*args)

    return apply


def _get_env(runtime: Runtime, name: Any, default: Any = _MISSING) -> Any:
    value = runtime.env(_str(name, "sys.get_env"))
    if value is None:
        if default is _MISSING:
            raise key_error(name)
        return default
    return value


# Retry predicates (reference §6.6): which errors the predefined policies retry.
_RETRIED_CODES = {429, 502, 503, 504}
_RETRIED_TAGS = {"ConnectionError", "ConnectionFailedError", "TimeoutError"}
_RETRIED_CODES_NON_IDEMPOTENT = {429, 503}
_RETRIED_TAGS_NON_IDEMPOTENT = {"ConnectionFailedError"}


def _http_code(error: Any) -> int | None:
    if isinstance(error, dict) and "HttpError" in tags_of(error):
        code = error.get("code")
        return code if isinstance(code, int) else None
    return None


def default_retry_predicate(error: Any) -> bool:
    return _http_code(error) in _RETRIED_CODES or bool(_RETRIED_TAGS & set(tags_of(error)))


def default_retry_predicate_non_idempotent(error: Any) -> bool:
    code = _http_code(error)
    return code in _RETRIED_CODES_NON_IDEMPOTENT or bool(
        _RETRIED_TAGS_NON_IDEMPOTENT & set(tags_of(error))
    )


BUILTIN_PREDICATES: dict[str, Callable[[Any], bool]] = {
    "http.default_retry_predicate": default_retry_predicate,
    "http.default_retry_predicate_non_idempotent": default_retry_predicate_non_idempotent,
    "retry.always": lambda e: True,
    "retry.never": lambda e: False,
}


def _f(name: str, fn: Callable[..., Any], params: str, required: int | None = None) -> Function:
    names = tuple(params.split()) if params else ()
    return Function(name, fn, names, len(names) if required is None else required)


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        _f("len", _len, "value"),
        _f("keys", _keys, "map"),
        _f("default", _default, "value default_value"),
        _f("type", type_name, "value"),
        _f("int", _to_int, "value"),
        _f("double", _to_double, "value"),
        _f("string", to_string, "value"),
        _f("bool", _to_bool, "value"),
        _f("map.get", _map_get, "map keys"),
        _f("map.delete", _map_delete, "map key"),
        _f("map.merge", _map_merge, "first second"),
        _f("map.merge_nested", _map_merge_nested, "first second"),
        _f("list.concat", lambda objs, val: [*_list(objs, "list.concat"), val], "objs val"),
        _f("list.prepend", lambda objs, val: [val, *_list(objs, "list.prepend")], "objs val"),
        _f("text.split", lambda s, sep: _str(s, "text.split").split(sep), "source separator"),
        _f("text.substring", _substring, "source start end"),
        _f("text.find_all", _find_all, "source substr"),
        _f("text.find_all_regex", _find_all_regex, "source regexp"),
        _f(
            "text.match_regex",
            lambda s, r: re.search(r, _str(s, "text.match_regex")) is not None,
            "source regexp",
        ),
        _f(
            "text.replace_all",
            lambda s, a, b: _str(s, "text.replace_all").replace(a, b),
            "source substr repl",
        ),
        _f(
            "text.replace_all_regex",
            lambda s, r, b: re.sub(r, b, _str(s, "text.replace_all_regex")),
            "source regexp repl",
        ),
        _f("text.to_lower", lambda s: _str(s, "text.to_lower").lower(), "source"),
        _f("text.to_upper", lambda s: _str(s, "text.to_upper").upper(), "source"),
        _f(
            "text.encode",
            lambda s, charset="UTF-8": _str(s, "text.encode").encode(charset),
            "text charset",
            1,
        ),
        _f("text.decode", lambda b, charset="UTF-8": bytes(b).decode(charset), "data charset", 1),
        _f(
            "text.url_encode",
            lambda s: urllib.parse.quote(_str(s, "text.url_encode"), safe=""),
            "source",
        ),
        _f(
            "text.url_encode_plus",
            lambda s: urllib.parse.quote_plus(_str(s, "text.url_encode_plus")),
            "source",
        ),
        _f(
            "text.url_decode",
            lambda s: urllib.parse.unquote_plus(_str(s, "text.url_decode")),
            "source",
        ),
        _f("json.encode", lambda d: _json_text(d).encode(), "data"),
        _f("json.encode_to_string", _json_text, "data"),
        _f("json.decode", _json_decode, "data"),
        _f("time.format", _time_format, "seconds timezone", 1),
        _f("time.parse", _time_parse, "value"),
        _f("base64.encode", _b64encode, "data padding", 1),
        _f("base64.decode", _b64decode, "data padding", 1),
        _f("math.abs", _math(abs, "math.abs"), "x"),
        _f("math.floor", _math(lambda x: math.floor(x), "math.floor"), "x"),
        _f("math.max", _math(max, "math.max"), "x y"),
        _f("math.min", _math(min, "math.min"), "x y"),
        _f("uuid.generate", lambda: str(uuid.uuid4()), ""),
        _f("hash.compute_checksum", _checksum, "data algorithm"),
        _f("hash.compute_hmac", _hmac, "key data algorithm"),
        *[_f(name, pred, "e") for name, pred in BUILTIN_PREDICATES.items()],
        Function("sys.now", lambda rt: rt.now(), (), 0, needs_runtime=True),
        Function("sys.get_env", _get_env, ("name", "default"), 1, needs_runtime=True),
    ]
}


def call_function(name: str, args: list[Any], runtime: Runtime) -> Any:
    """Call a standard function with positional arguments; Python errors become Workflows errors."""
    function = FUNCTIONS.get(name)
    if function is None:
        raise builtin("KeyError", f"function {name} is not defined")
    if not function.required <= len(args) <= len(function.params):
        raise type_error(
            f"{name}() takes {function.required}..{len(function.params)} arguments, got {len(args)}"
        )
    if function.needs_runtime:
        return function.fn(runtime, *args)
    return function.fn(*args)


def predicate_name(value: Any) -> PredicateRef | None:
    return value if isinstance(value, PredicateRef) else None
