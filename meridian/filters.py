"""Pub/Sub subscription filters: parse the filter language and match message attributes.

Follows production rather than Google's ``pstest`` fake, so a filter that works here is accepted by
Pub/Sub: only ``attributes`` can be read, ``AND``/``OR``/``NOT`` are uppercase, ``AND`` and ``OR``
never mix at one level without parentheses, the value is a string literal on the right, and the
whole filter is at most 256 UTF-8 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput, UnexpectedToken

from meridian.domain.errors import ValidationError

__all__ = ["MAX_FILTER_BYTES", "Filter", "FilterSyntaxError", "parse_filter"]

MAX_FILTER_BYTES = 256

_GRAMMAR = r"""
?start: expr
?expr: and_chain | or_chain | unary
and_chain: unary (_AND unary)+
or_chain: unary (_OR unary)+
?unary: not_op | primary
not_op: (_NOT | _MINUS) unary
?primary: _LPAR expr _RPAR | has_key | equals | not_equals | has_prefix
has_key: _ATTRIBUTES _COLON (NAME | STRING)
equals: _ATTRIBUTES _DOT (NAME | STRING) _EQ STRING
not_equals: _ATTRIBUTES _DOT (NAME | STRING) _NE STRING
has_prefix: _HAS_PREFIX _LPAR _ATTRIBUTES _DOT (NAME | STRING) _COMMA STRING _RPAR

_AND: /AND\b/
_OR: /OR\b/
_NOT: /NOT\b/
_MINUS: "-"
_ATTRIBUTES: /attributes\b/
_HAS_PREFIX: /hasPrefix\b/
_LPAR: "("
_RPAR: ")"
_COLON: ":"
_DOT: "."
_EQ: "="
_NE: "!="
_COMMA: ","
NAME: /[A-Za-z0-9_-]+/
STRING: /"(?:[^"\\]|\\[\s\S])*"/
%ignore /[ \t\r\n]+/
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="contextual")
_STRING = re.compile(_PARSER.get_terminal("STRING").pattern.to_regexp())


class FilterSyntaxError(ValidationError):
    """A filter Pub/Sub would reject with INVALID_ARGUMENT; ``column`` is 1-based, or None."""

    def __init__(self, problem: str, filter_text: str, column: int | None = None) -> None:
        where = f" at column {column}" if column is not None else ""
        super().__init__(f"invalid filter{where}: {problem}")
        self.problem = problem
        self.filter_text = filter_text
        self.column = column


@dataclass(frozen=True, slots=True)
class HasKey:
    key: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return self.key in attributes


@dataclass(frozen=True, slots=True)
class Equals:
    key: str
    value: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return attributes.get(self.key) == self.value


@dataclass(frozen=True, slots=True)
class NotEquals:
    key: str
    value: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        # True when the key is absent, as in production.
        return attributes.get(self.key) != self.value


@dataclass(frozen=True, slots=True)
class HasPrefix:
    key: str
    prefix: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        value = attributes.get(self.key)
        return value is not None and value.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Condition

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return not self.operand.matches(attributes)


@dataclass(frozen=True, slots=True)
class AllOf:
    operands: tuple[Condition, ...]

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return all(operand.matches(attributes) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class AnyOf:
    operands: tuple[Condition, ...]

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return any(operand.matches(attributes) for operand in self.operands)


Condition: TypeAlias = HasKey | Equals | NotEquals | HasPrefix | Not | AllOf | AnyOf


@dataclass(frozen=True)
class Filter:
    """A valid subscription filter; the empty filter matches every message."""

    text: str
    condition: Condition | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", _parse(self.text))

    def matches(self, attributes: Mapping[str, str]) -> bool:
        """Whether a message with these attributes is delivered (others are auto-acked)."""
        return self.condition is None or self.condition.matches(attributes)

    def equality_values(self, key: str) -> frozenset[str]:
        """Every literal compared with ``attributes.<key>`` by ``=`` or ``!=``."""
        return frozenset(
            node.value
            for node in self._nodes()
            if isinstance(node, Equals | NotEquals) and node.key == key
        )

    def prefix_values(self, key: str) -> frozenset[str]:
        """Every prefix used in ``hasPrefix(attributes.<key>, ...)``."""
        return frozenset(
            node.prefix for node in self._nodes() if isinstance(node, HasPrefix) and node.key == key
        )

    def _nodes(self) -> Iterator[Condition]:
        pending = [self.condition] if self.condition is not None else []
        while pending:
            node = pending.pop()
            yield node
            if isinstance(node, Not):
                pending.append(node.operand)
            elif isinstance(node, AllOf | AnyOf):
                pending.extend(node.operands)


def parse_filter(text: str) -> Filter:
    """Parse a subscription filter; raises FilterSyntaxError where Pub/Sub would refuse it."""
    return Filter(text)


def _parse(text: str) -> Condition | None:
    size = len(text.encode("utf-8"))
    if size > MAX_FILTER_BYTES:
        raise FilterSyntaxError(
            f"filter is {size} bytes; the limit is {MAX_FILTER_BYTES} bytes", text
        )
    if not text.strip(" \t\r\n"):  # the whitespace the grammar ignores
        return None
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as e:
        expected: set[str] = set(getattr(e, "expected", None) or getattr(e, "allowed", None) or ())
        at_end = isinstance(e, UnexpectedToken) and e.token.type == "$END"
        pos = len(text.rstrip()) if at_end else e.pos_in_stream or 0
        raise FilterSyntaxError(_diagnose(text, pos, expected), text, pos + 1) from None
    return _build(tree, text)


def _build(tree: Tree[Token], text: str) -> Condition:
    kind, children = tree.data, tree.children
    if kind in ("and_chain", "or_chain", "not_op"):
        operands = tuple(_build(child, text) for child in children if isinstance(child, Tree))
        if kind == "not_op":
            return Not(operands[0])
        return AllOf(operands) if kind == "and_chain" else AnyOf(operands)
    key_token, *rest = (child for child in children if isinstance(child, Token))
    key = _unquote(key_token, text) if key_token.type == "STRING" else str(key_token)
    if kind == "has_key":
        return HasKey(key)
    value = _unquote(rest[0], text)
    if kind == "equals":
        return Equals(key, value)
    return NotEquals(key, value) if kind == "not_equals" else HasPrefix(key, value)


_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|([0-3][0-7]{2})|(.?))", re.S)
_SIMPLE_ESCAPES = {
    "\\": "\\",
    '"': '"',
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


def _unquote(token: Token, text: str) -> str:
    """Decode a string literal's escapes: simple ones, \\xHH, \\uHHHH and octal \\NNN."""

    def decode(m: re.Match[str]) -> str:
        hex2, hex4, octal, other = m.groups()
        if other in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[other]
        code = int(hex2 or hex4, 16) if hex2 or hex4 else int(octal, 8) if octal else None
        if code is None or 0xD800 <= code <= 0xDFFF:
            column = (token.start_pos or 0) + m.start() + 2
            raise FilterSyntaxError(
                f"invalid escape '{m.group()}' in a string literal", text, column
            )
        return chr(code)

    return _ESCAPE.sub(decode, str(token)[1:-1])


_KEYWORDS = frozenset({"AND", "OR", "NOT"})
_TOKEN = re.compile(r"[A-Za-z0-9_]+|!=|\S")
_KEY_BEFORE = re.compile(r"attributes\s*[.:]\s*([A-Za-z0-9_-]+)$")
_KEY_RUN = re.compile(r"[^\s=!,()]+")
_EXPECTED_LABELS = {
    "_ATTRIBUTES": "'attributes'",
    "_HAS_PREFIX": "'hasPrefix('",
    "_NOT": "'NOT'",
    "_MINUS": "'-'",
    "_LPAR": "'('",
    "NAME": "a key",
    "STRING": "a string literal",
    "_COLON": "':'",
    "_DOT": "'.'",
    "_EQ": "'='",
    "_NE": "'!='",
    "_COMMA": "','",
    "_AND": "'AND'",
    "_OR": "'OR'",
    "_RPAR": "')'",
    "$END": "end of filter",
}


def _diagnose(text: str, pos: int, expected: set[str]) -> str:
    """Name the rule broken at ``pos``, in the words of the filter language rather than lark's."""
    wanted = ", ".join(label for name, label in _EXPECTED_LABELS.items() if name in expected)
    rest = text[pos:]
    if not rest.strip():
        return f"filter ends early; expected {wanted}"
    token = _TOKEN.match(rest)
    got = token.group() if token else rest[0]
    if got.upper() in _KEYWORDS and got not in _KEYWORDS:
        return f"operators must be uppercase: '{got}'"
    if got in ("AND", "OR") and f"_{got}" not in expected and {"_AND", "_OR"} & expected:
        return "mixing AND and OR needs parentheses"
    if got == '"' and not _STRING.match(rest):
        return "unterminated string literal"
    key_before = _KEY_BEFORE.search(text, 0, pos)
    if key_before and got not in {"=", "!=", "(", ")", ","}:
        key_run = _KEY_RUN.match(text, key_before.start(1))
        raw = key_run.group() if key_run else got
        return f'keys with characters other than letters, digits, _ and - must be quoted: "{raw}"'
    if "_ATTRIBUTES" in expected and got not in _KEYWORDS:
        if got == '"':
            return 'a string literal can only be the value on the right: attributes.KEY = "value"'
        if got[0].isalpha() and text[pos + len(got) :].lstrip().startswith("("):
            return f"unknown function '{got}'; hasPrefix is the only function"
        if got[0].isalpha():
            return f"unknown operand '{got}'; filters can only test attributes"
    if expected == {"STRING"}:
        two_keys = "; comparing two attributes is not supported" if got == "attributes" else ""
        return f"the value must be a string literal, got '{got}'{two_keys}"
    return f"unexpected '{got}'; expected {wanted}"
