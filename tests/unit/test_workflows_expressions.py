"""The ``${…}`` expression language (reference §6.8) and the standard library (§6.7)."""

from __future__ import annotations

from typing import Any

import pytest

from meridian.embedded.workflows.errors import WorkflowError
from meridian.embedded.workflows.expressions import ExpressionSyntaxError, compile_expression
from meridian.embedded.workflows.stdlib import call_function


class Scope:
    def __init__(self, **variables: Any) -> None:
        self.variables = variables

    def get(self, name: str) -> Any:
        if name not in self.variables:
            raise WorkflowError({"message": name, "tags": ["KeyError"]})
        return self.variables[name]

    def now(self) -> float:
        return 1_700_000_000.5

    def env(self, name: str) -> str | None:
        return {"REGION": "eu"}.get(name)

    def call(self, name: str, args: list[Any]) -> Any:
        return call_function(name, args, self)


def ev(text: str, **variables: Any) -> Any:
    return compile_expression("${" + text + "}")(Scope(**variables))


def tag(text: str, **variables: Any) -> str:
    with pytest.raises(WorkflowError) as caught:
        ev(text, **variables)
    return str(caught.value.value["tags"][0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7.0 // 2", 3.0),
        ("7 % 3", 1),
        ("-2 + 5", 3),
        ("1.5e1", 15.0),
        ('"a" + "b"', "ab"),
        ('"n=" + 1', "n=1"),
        ('"ok: " + true', "ok: true"),
        ("1 < 2 and 2 <= 2", True),
        ("1 > 2 or 3 >= 3", True),
        ("not false", True),
        ("NOT FALSE AND TRUE", True),
        ("True == true", True),
        ("1 == 1.0", True),
        ("1 == true", False),
        ('"x" != "y"', True),
        ("2 in [1, 2, 3]", True),
        ('"k" in {"k": 1}', True),
        ("null == null", True),
        ("[1, [2, 3]][1][0]", 2),
        ('{"a": {"b": 4}}.a.b', 4),
        ("'single' + \"double\"", "singledouble"),
        ('"esc\\"aped"', 'esc"aped'),
    ],
)
def test_operators_and_literals(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_precedence_puts_not_above_comparison() -> None:
    # §6.8: `not` binds tighter than comparisons, so this is (not true) == false
    assert ev("not true == false") is True


def test_variables_indexing_and_field_access() -> None:
    parcel = {"stops": [{"id": "s1"}, {"id": "s2"}], "weight": 31}
    assert ev("parcel.stops[1].id", parcel=parcel) == "s2"
    assert ev('parcel["weight"] > 30', parcel=parcel) is True
    assert ev("parcel.stops[i].id", parcel=parcel, i=0) == "s1"


def test_errors_carry_the_reference_tags() -> None:
    assert tag("m.missing", m={}) == "KeyError"
    assert tag("l[3]", l=[1]) == "IndexError"
    assert tag("l[-1]", l=[1]) == "IndexError"  # no negative indexes (§6.8)
    assert tag("1 / 0") == "ZeroDivisionError"
    assert tag("true + 1") == "TypeError"  # bool + number is an error
    assert tag("1 and true") == "TypeError"
    assert tag("[1] + [2]") == "TypeError"
    assert tag("undefined_var") == "KeyError"


def test_keywords_do_not_swallow_names_that_start_like_them() -> None:
    assert ev("android + 1", android=1) == 2
    assert ev("in_stock and not notes", in_stock=True, notes=False) is True


@pytest.mark.parametrize("bad", ["1 +", "a..b", "f(", "and", "True or", '"open'])
def test_syntax_errors_are_refused(bad: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        compile_expression("${" + bad + "}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('len("héllo")', 5),
        ("len([1, 2])", 2),
        ('keys({"a": 1, "b": 2})', ["a", "b"]),
        ('map.get({"a": {"b": 1}}, ["a", "b"])', 1),
        ('map.get({"a": 1}, "zz")', None),
        ('default(map.get({}, "k"), "fallback")', "fallback"),
        ('map.merge({"a": 1}, {"b": 2})', {"a": 1, "b": 2}),
        ('map.merge_nested({"a": {"x": 1}}, {"a": {"y": 2}})', {"a": {"x": 1, "y": 2}}),
        ('map.delete({"a": 1, "b": 2}, "a")', {"b": 2}),
        ("list.concat([1], 2)", [1, 2]),
        ("list.prepend([1], 0)", [0, 1]),
        ("string(12) + string(1.5)", "121.5"),
        ('int("42") + int(2.9)', 44),
        ('double("2.5")', 2.5),
        ('type({"a": 1})', "map"),
        ('text.split("a,b", ",")', ["a", "b"]),
        ('text.to_upper("ab")', "AB"),
        ('text.replace_all("a-b-c", "-", "+")', "a+b+c"),
        ('text.match_regex("P-123", "^P-[0-9]+$")', True),
        ('text.substring("meridian", 0, 4)', "meri"),
        ('json.encode_to_string({"a": [1, true, null]})', '{"a":[1,true,null]}'),
        ('json.decode("{\\"a\\": 1}")', {"a": 1}),
        ('json.decode(json.encode([1, "x"]))', [1, "x"]),
        ("time.format(0)", "1970-01-01T00:00:00.000000Z"),
        ('time.parse("1970-01-01T00:01:00Z")', 60.0),
        ('base64.decode(base64.encode("hi"))', b"hi"),
        ("math.max(1, 2.5)", 2.5),
        ('sys.get_env("REGION")', "eu"),
        ('sys.get_env("NOPE", "dflt")', "dflt"),
        ("sys.now()", 1_700_000_000.5),
        ('text.url_encode("a b/c")', "a%20b%2Fc"),
    ],
)
def test_standard_functions(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_uuid_generate_is_a_fresh_uuid() -> None:
    first, second = ev("uuid.generate()"), ev("uuid.generate()")
    assert len(first) == 36 and first != second


def test_get_env_without_default_raises_key_error() -> None:
    assert tag('sys.get_env("NOPE")') == "KeyError"  # §6.4: sys.get_env unknown → KeyError
