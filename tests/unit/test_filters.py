"""The Pub/Sub filter language: the reference vectors, production's rejections, and a round trip."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.domain.errors import ValidationError
from meridian.filters import Filter, FilterSyntaxError, parse_filter

# §1.3 of gcp-semantics.md, column by column.
VECTOR_ATTRIBUTES: list[dict[str, str]] = [
    {},
    {"domain": "com"},
    {"domain": "co.uk"},
    {"lang": "en"},
]
T, F = True, False
VECTORS = [
    ("attributes:domain", (F, T, T, F)),
    ('attributes.domain = "com"', (F, T, F, F)),
    ('attributes.domain != "com"', (T, F, T, T)),
    ('hasPrefix(attributes.domain, "co")', (F, T, T, F)),
    ("NOT attributes:domain", (T, F, F, T)),
    ("-attributes:domain", (T, F, F, T)),
    ('attributes:domain AND (attributes.lang = "en" OR attributes.lang = "fr")', (F, F, F, F)),
]
INVALID_VECTORS = [
    'attributes:domain AND attributes.lang = "en" OR attributes:x',
    'attributes.domain = "com" and attributes:lang',
]


def rejection(text: str) -> FilterSyntaxError:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)
    return caught.value


@pytest.mark.parametrize(("text", "expected"), VECTORS)
def test_reference_vectors(text: str, expected: tuple[bool, ...]) -> None:
    f = parse_filter(text)
    assert tuple(f.matches(attributes) for attributes in VECTOR_ATTRIBUTES) == expected


@pytest.mark.parametrize("text", INVALID_VECTORS)
def test_reference_invalid_vectors(text: str) -> None:
    error = rejection(text)
    assert isinstance(error, ValidationError)
    assert error.filter_text == text


@pytest.mark.parametrize("text", ["", " ", "\t\n  "])
def test_empty_filter_matches_everything(text: str) -> None:
    f = parse_filter(text)
    assert f.matches({}) and f.matches({"domain": "com"})
    assert f.equality_values("domain") == frozenset()


def test_filter_is_a_value_that_validates_itself() -> None:
    assert Filter("attributes:a") == parse_filter("attributes:a")
    assert hash(Filter("attributes:a")) == hash(parse_filter("attributes:a"))
    with pytest.raises(FilterSyntaxError):
        Filter("attributes:")


@pytest.mark.parametrize(
    ("literal", "decoded"),
    [
        (r"plain", "plain"),
        (r"a\\b", "a\\b"),
        (r"say \"hi\"", 'say "hi"'),
        (r"it\'s", "it's"),
        (r"tab\there\nnewline\r", "tab\there\nnewline\r"),
        (r"\a\b\f\v", "\a\b\f\v"),
        (r"\x41\x7a\xE9", "Azé"),
        (r"\u00e9\u20AC", "é€"),
        (r"\101\142\000", "Ab\x00"),
        (r"caf\u00e9 \xe9 é", "café é é"),
        ("😀 raw", "😀 raw"),
    ],
)
def test_string_escapes_are_decoded(literal: str, decoded: str) -> None:
    f = parse_filter(f'attributes.k = "{literal}"')
    assert f.matches({"k": decoded})
    assert f.equality_values("k") == {decoded}


@pytest.mark.parametrize(
    ("literal", "bad"), [(r"\q", r"\q"), (r"\x4g", r"\x"), (r"\u12", r"\u"), (r"\ud800", r"\ud800")]
)
def test_invalid_escapes_are_rejected(literal: str, bad: str) -> None:
    text = f'attributes.k = "ok{literal}"'
    error = rejection(text)
    assert f"invalid escape '{bad}'" in str(error)
    assert error.column == text.index("\\") + 1


@pytest.mark.parametrize(
    ("text", "attributes"),
    [
        ('attributes:"iana.org/language_tag"', {"iana.org/language_tag": "x"}),
        ('attributes."a b" = "v"', {"a b": "v"}),
        ('attributes."a\\"b" = "w"', {'a"b': "w"}),
        ('hasPrefix(attributes."x.y", "p")', {"x.y": "pq"}),
        ('attributes."plain" = "v"', {"plain": "v"}),
        ('attributes:my-key_2 AND attributes.0 = "z"', {"my-key_2": "", "0": "z"}),
    ],
)
def test_quoted_keys(text: str, attributes: dict[str, str]) -> None:
    f = parse_filter(text)
    assert f.matches(attributes)
    assert not f.matches({"iana": "x", "a": "v", "x": "pq", "plain": "w"})


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("attributes:iana.org/language_tag", '"iana.org/language_tag"'),
        ('attributes.a.b = "x"', '"a.b"'),
        ('hasPrefix(attributes.a/b, "x")', '"a/b"'),
    ],
)
def test_keys_with_other_characters_must_be_quoted(text: str, quoted: str) -> None:
    error = rejection(text)
    assert "must be quoted" in str(error) and quoted in str(error)


@pytest.mark.parametrize(
    ("text", "absent", "only_a", "only_b", "both"),
    [
        ("NOT attributes:a AND attributes:b", F, F, T, F),  # (NOT a) AND b
        ("-attributes:a AND attributes:b", F, F, T, F),
        ("NOT (attributes:a AND attributes:b)", T, T, T, F),
        ("-(attributes:a AND attributes:b)", T, T, T, F),
        ("NOT attributes:a OR attributes:b", T, F, T, T),  # (NOT a) OR b
        ("NOT (attributes:a OR attributes:b)", T, F, F, F),
        ("NOT NOT attributes:a", F, T, F, T),
        ("- -attributes:a", F, T, F, T),
        ("--attributes:a", F, T, F, T),
        ("NOT -attributes:a", F, T, F, T),
        ("NOT(attributes:a)", T, F, T, F),
    ],
)
def test_not_and_minus_bind_tightest(
    text: str, absent: bool, only_a: bool, only_b: bool, both: bool
) -> None:
    f = parse_filter(text)
    cases = [{}, {"a": "1"}, {"b": "1"}, {"a": "1", "b": "1"}]
    assert [f.matches(attributes) for attributes in cases] == [absent, only_a, only_b, both]


def test_nested_parentheses() -> None:
    f = parse_filter(
        '((attributes:a)) AND (attributes.b = "1" OR (attributes:c AND NOT (attributes:d)))'
    )
    assert f.matches({"a": "", "b": "1"})
    assert f.matches({"a": "", "c": "", "b": "2"})
    assert not f.matches({"a": "", "c": "", "d": ""})
    assert not f.matches({"b": "1"})


@pytest.mark.parametrize(
    ("text", "operator"),
    [
        ("attributes:a AND attributes:b OR attributes:c", "OR"),
        ("attributes:a OR attributes:b AND attributes:c", "AND"),
        ("NOT attributes:a OR attributes:b AND attributes:c", "AND"),
        ("(attributes:a AND attributes:b OR attributes:c)", "OR"),
        ("attributes:x AND (attributes:a OR attributes:b AND attributes:c)", "AND"),
        (
            "attributes:x OR (attributes:y AND (attributes:a OR attributes:b AND attributes:c))",
            "AND",
        ),
        ("(attributes:a OR attributes:b) AND attributes:c OR attributes:d", "OR"),
    ],
)
def test_mixing_and_or_without_parentheses_is_rejected(text: str, operator: str) -> None:
    error = rejection(text)
    assert "mixing AND and OR needs parentheses" in str(error)
    assert error.column == text.rindex(f" {operator} ") + 2


@pytest.mark.parametrize(
    "text",
    [
        "(attributes:a AND attributes:b) OR attributes:c",
        "attributes:a OR (attributes:b AND attributes:c)",
        "attributes:x AND (attributes:a OR (attributes:b AND attributes:c))",
        "attributes:x OR (attributes:y AND (attributes:a OR (attributes:b AND attributes:c)))",
        "((attributes:a OR attributes:b) AND attributes:c) OR attributes:d",
    ],
)
def test_mixing_and_or_is_accepted_when_parenthesised_at_every_level(text: str) -> None:
    f = parse_filter(text)
    assert f.matches({"a": "", "b": "", "c": "", "d": "", "x": "", "y": ""})
    assert not f.matches({})


def test_limit_is_256_bytes() -> None:
    frame = 'attributes.k = "{}"'
    exactly = frame.format("x" * (256 - len(frame.format(""))))
    assert len(exactly.encode()) == 256
    assert parse_filter(exactly).matches({"k": exactly[16:-1]})
    error = rejection(exactly[:-1] + 'x"')
    assert "filter is 257 bytes; the limit is 256 bytes" in str(error)
    assert error.column is None


def test_limit_counts_utf8_bytes_not_characters() -> None:
    frame = 'attributes.k = "{}"'  # 17 bytes around the value
    exactly = frame.format("x" + "é" * 119)  # 17 + 1 + 238 bytes
    assert len(exactly.encode()) == 256 and len(exactly) == 137
    assert parse_filter(exactly).equality_values("k") == {"x" + "é" * 119}
    too_long = frame.format("x" + "é" * 118 + "€")  # still 137 characters, but 257 bytes
    assert len(too_long) == 137
    assert "filter is 257 bytes; the limit is 256 bytes" in str(rejection(too_long))


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ('attributes.domain = "com" and attributes:lang', "and"),
        ("attributes:a or attributes:b", "or"),
        ("not attributes:a", "not"),
        ("attributes:a AND not attributes:b", "not"),
        ("attributes:a Or attributes:b", "Or"),
        ("(attributes:a And attributes:b)", "And"),
    ],
)
def test_lowercase_keywords_are_rejected(text: str, word: str) -> None:
    error = rejection(text)
    assert f"operators must be uppercase: '{word}'" in str(error)
    assert error.column == re.search(rf"\b{word}\b", text).start() + 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "fragment", "column"),
    [
        ('"v" = attributes.k', "value on the right", 1),
        ('(attributes.d = "net" OR "org")', "value on the right", 26),
        ("attributes.a = attributes.b", "comparing two attributes is not supported", 16),
        ("hasPrefix(attributes.a, attributes.b)", "value must be a string literal", 25),
        ("attributes.a = 1", "value must be a string literal, got '1'", 16),
        ('attributes.a == "x"', "value must be a string literal, got '='", 15),
        ('data = "x"', "unknown operand 'data'", 1),
        ('orderingKey = "k"', "unknown operand 'orderingKey'", 1),
        ('attributes:a AND messageId = "1"', "unknown operand 'messageId'", 18),
        ('hasPrefix(data, "x")', "unknown operand 'data'", 11),
        ('regex(attributes.a, "x")', "unknown function 'regex'; hasPrefix is the only function", 1),
        ('hasprefix(attributes.a, "x")', "unknown function 'hasprefix'", 1),
        ('attributes.a > "1"', "unexpected '>'; expected '=', '!='", 14),
        ('attributes.a IN ("x")', "unexpected 'IN'", 14),
        ("attributes:a attributes:b", "unexpected 'attributes'", 14),
        ("attributes:a)", "unexpected ')'", 13),
        ("()", "unexpected ')'", 2),
        ("hasPrefix(attributes.a)", "unexpected ')'; expected ','", 23),
        ('attributes.a = "x', "unterminated string literal", 16),
        ("(attributes:a", "filter ends early; expected ')'", 14),
        ("attributes:a AND ", "filter ends early", 17),
        ("attributes.k =", "filter ends early; expected a string literal", 15),
        ("attributes:", "filter ends early; expected a key", 12),
        ("attributes:a AND AND attributes:b", "unexpected 'AND'", 18),
        ("Attributes:a", "unknown operand 'Attributes'", 1),
    ],
)
def test_invalid_filters_say_what_is_wrong_and_where(text: str, fragment: str, column: int) -> None:
    error = rejection(text)
    assert fragment in str(error)
    assert error.column == column
    assert f"column {column}" in str(error)
    assert error.filter_text == text


def test_equality_and_prefix_values() -> None:
    f = parse_filter(
        '(attributes.eventType = "ParcelDelivered" OR NOT attributes.eventType != "ParcelLost")'
        ' AND hasPrefix(attributes.eventType, "Route") AND attributes.region = "eu"'
        ' AND hasPrefix(attributes.region, "e")'
    )
    assert f.equality_values("eventType") == {"ParcelDelivered", "ParcelLost"}
    assert f.equality_values("region") == {"eu"}
    assert f.equality_values("missing") == frozenset()
    assert f.prefix_values("eventType") == {"Route"}
    assert f.prefix_values("region") == {"e"}
    assert parse_filter("attributes:eventType").equality_values("eventType") == frozenset()


# Round trip: random condition trees, rendered to text, parsed back, evaluated both ways.
KEYS = ["a", "b", "my-key_1", "x.y", "é k", 'q"t']
VALUES = st.text(alphabet='ab"\\é\n\x01€😀', max_size=2)
SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\t": "\\t", "\x07": "\\a"}

Node = tuple[Any, ...]
Draw = Callable[[st.SearchStrategy[Any]], Any]
leaves = st.one_of(
    st.tuples(st.just("has"), st.sampled_from(KEYS)),
    st.tuples(st.sampled_from(["eq", "ne", "prefix"]), st.sampled_from(KEYS), VALUES),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.tuples(st.just("not"), children),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(children, min_size=2, max_size=3)),
    ),
    max_leaves=5,
)


def evaluate(node: Node, attributes: Mapping[str, str]) -> bool:
    match node:
        case ("has", key):
            return key in attributes
        case ("eq", key, value):
            return key in attributes and attributes[key] == value
        case ("ne", key, value):
            return key not in attributes or attributes[key] != value
        case ("prefix", key, value):
            return key in attributes and attributes[key].startswith(value)
        case ("not", child):
            return not evaluate(child, attributes)
        case ("and", children):
            return all(evaluate(child, attributes) for child in children)
        case ("or", children):
            return any(evaluate(child, attributes) for child in children)
    raise AssertionError(node)


def render_string(value: str, draw: Draw) -> str:
    out = []
    for char in value:
        forms = [] if char in '"\\' else [char]
        if char in SIMPLE_ESCAPES:
            forms.append(SIMPLE_ESCAPES[char])
        if ord(char) < 0x100:
            forms += [f"\\x{ord(char):02x}", f"\\x{ord(char):02X}", f"\\{ord(char):03o}"]
        if ord(char) < 0x10000:
            forms.append(f"\\u{ord(char):04x}")
        out.append(draw(st.sampled_from(forms)))
    return '"' + "".join(out) + '"'


def render_key(key: str, draw: Draw) -> str:
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", key) is not None
    return key if bare and draw(st.booleans()) else render_string(key, draw)


def render(node: Node, draw: Draw) -> str:
    kind = node[0]
    space = draw(st.sampled_from(["", " ", "  "]))
    if kind == "has":
        text = f"attributes:{render_key(node[1], draw)}"
    elif kind in ("eq", "ne"):
        op = "=" if kind == "eq" else "!="
        text = f"attributes.{render_key(node[1], draw)}{space}{op} {render_string(node[2], draw)}"
    elif kind == "prefix":
        key, prefix = render_key(node[1], draw), render_string(node[2], draw)
        text = f"hasPrefix({space}attributes.{key},{space}{prefix})"
    elif kind == "not":
        operator = draw(st.sampled_from(["NOT ", "-", "- "]))
        return operator + render_operand(node[1], draw)
    else:
        text = f" {kind.upper()} ".join(render_operand(child, draw) for child in node[1])
    return f"({text})" if draw(st.integers(0, 4)) == 0 else text


def render_operand(node: Node, draw: Draw) -> str:
    """An operand of AND, OR or NOT: chains always need parentheses there."""
    text = render(node, draw)
    return f"({text})" if node[0] in ("and", "or") else text


def literals(node: Node, kinds: tuple[str, ...], key: str) -> set[str]:
    if node[0] == "not":
        return literals(node[1], kinds, key)
    if node[0] in ("and", "or"):
        return set().union(*(literals(child, kinds, key) for child in node[1]))
    return {node[2]} if node[0] in kinds and node[1] == key else set()


@settings(max_examples=300, deadline=None)
@given(tree=trees, data=st.data())
def test_rendered_trees_parse_back_to_the_same_predicate(tree: Node, data: st.DataObject) -> None:
    text = render(tree, data.draw)
    if len(text.encode()) > 256:
        assert "the limit is 256 bytes" in str(rejection(text))
        return
    f = parse_filter(text)
    attribute_maps = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4)
    for attributes in data.draw(st.lists(attribute_maps, min_size=1, max_size=6)):
        assert f.matches(attributes) == evaluate(tree, attributes), (text, attributes)
    for key in KEYS:
        assert f.equality_values(key) == literals(tree, ("eq", "ne"), key)
        assert f.prefix_values(key) == literals(tree, ("prefix",), key)
