"""The ``${…}`` expression language (reference §6.8), parsed by a lark grammar and compiled once,
at load time, into closures over a scope.

Precedence, high to low: ``()``, ``.``, ``[]``, ``not``, unary ``-``, ``* / // %``, ``+ -``,
comparisons and ``in``, ``and``, ``or``. Keywords are all-lower or all-upper case.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, VisitError

from .errors import WorkflowError, builtin, index_error, key_error, type_error

GRAMMAR = r"""
?start: expr
?expr: or_test
?or_test: and_test | or_test _OR and_test -> or_
?and_test: comparison | and_test _AND comparison -> and_
?comparison: sum | comparison COMP_OP sum -> compare | comparison _IN sum -> in_
?sum: product | sum ADD_OP product -> binop | sum MINUS product -> binop
?product: unary | product MUL_OP unary -> binop
?unary: _NOT unary -> not_ | MINUS unary -> neg | postfix
?postfix: atom
    | postfix "." NAME -> attr
    | postfix "[" expr "]" -> index
    | postfix "(" [expr ("," expr)*] ")" -> call
?atom: FLOAT -> float_ | INT -> int_ | STRING -> string
    | TRUE -> true | FALSE -> false | NULL -> null
    | NAME -> var
    | "(" expr ")"
    | "[" [expr ("," expr)*] "]" -> list_
    | "{" [pair ("," pair)*] "}" -> map_
pair: expr ":" expr

_OR.3: /(or|OR)(?![A-Za-z0-9_])/
_AND.3: /(and|AND)(?![A-Za-z0-9_])/
_NOT.3: /(not|NOT)(?![A-Za-z0-9_])/
_IN.3: /(in|IN)(?![A-Za-z0-9_])/
TRUE.3: /(true|True|TRUE)(?![A-Za-z0-9_])/
FALSE.3: /(false|False|FALSE)(?![A-Za-z0-9_])/
NULL.3: /(null|NULL)(?![A-Za-z0-9_])/
COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
ADD_OP: "+"
MINUS: "-"
MUL_OP: "//" | "*" | "/" | "%"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
FLOAT.2: /(\d+\.\d+|\d+\.(?![A-Za-z_])|\.\d+)([eE][+-]?\d+)?|\d+[eE][+-]?\d+/
INT: /\d+/
STRING: /"(\\.|[^"\\])*"/ | /'(\\.|[^'\\])*'/
%ignore /[ \t\r\n]+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", lexer="basic", maybe_placeholders=False)

# Predefined values referenced by dotted name (reference §6.6).
DEFAULT_BACKOFF = {"initial_delay": 1, "max_delay": 60, "multiplier": 1.25}


@dataclass(frozen=True)
class PredicateRef:
    """A retry predicate: a built-in (``http.default_retry_predicate`` …) or a subworkflow name."""

    name: str
    builtin: bool = True


CONSTANTS: dict[str, Any] = {
    "http.default_retry_predicate": PredicateRef("http.default_retry_predicate"),
    "http.default_retry_predicate_non_idempotent": PredicateRef(
        "http.default_retry_predicate_non_idempotent"
    ),
    "retry.always": PredicateRef("retry.always"),
    "retry.never": PredicateRef("retry.never"),
    "retry.default_backoff": DEFAULT_BACKOFF,
    "http.default_retry": {
        "predicate": PredicateRef("http.default_retry_predicate"),
        "max_retries": 5,
        "backoff": DEFAULT_BACKOFF,
    },
    "http.default_retry_non_idempotent": {
        "predicate": PredicateRef("http.default_retry_predicate_non_idempotent"),
        "max_retries": 5,
        "backoff": DEFAULT_BACKOFF,
    },
}


class Scope(Protocol):
    """What an expression reads: variables, and functions by dotted name."""

    def get(self, name: str) -> Any: ...

    def call(self, name: str, args: list[Any]) -> Any: ...


Node = tuple[Any, ...]
Eval = Callable[[Scope], Any]


@dataclass
class Expr:
    """A compiled ``${…}``: ``functions`` and ``variables`` it names are checked at load time."""

    source: str
    run: Eval
    functions: set[str] = field(default_factory=set)
    variables: set[str] = field(default_factory=set)

    def __call__(self, scope: Scope) -> Any:
        return self.run(scope)


class ExpressionSyntaxError(ValueError):
    pass


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def compile_expression(text: str) -> Expr:
    """Compile ``${…}`` (or a bare expression) into an Expr; raises ExpressionSyntaxError."""
    body = text[2:-1] if is_expression(text) else text
    try:
        tree = _ToAst().transform(_PARSER.parse(body))
    except VisitError as e:
        raise ExpressionSyntaxError(f"{text}: {e.orig_exc}") from e
    except LarkError as e:
        first = str(e).strip().splitlines()[0]
        raise ExpressionSyntaxError(f"{text}: {first}") from e
    expr = Expr(text, lambda scope: None)
    expr.run = _compile(tree, expr)
    return expr


def _unquote(token: str) -> str:
    if token.startswith("'"):
        inner = token[1:-1].replace("\\'", "'").replace('"', '\\"')
        return str(json.loads(f'"{inner}"'))
    return str(json.loads(token))


class _ToAst(Transformer[Token, Node]):
    def float_(self, t: list[Token]) -> Node:
        return ("lit", float(t[0]))

    def int_(self, t: list[Token]) -> Node:
        return ("lit", int(t[0]))

    def string(self, t: list[Token]) -> Node:
        return ("lit", _unquote(str(t[0])))

    def true(self, _: list[Token]) -> Node:
        return ("lit", True)

    def false(self, _: list[Token]) -> Node:
        return ("lit", False)

    def null(self, _: list[Token]) -> Node:
        return ("lit", None)

    def var(self, t: list[Token]) -> Node:
        return ("var", str(t[0]))

    def list_(self, items: list[Any]) -> Node:
        return ("list", [i for i in items if i is not None])

    def pair(self, kv: list[Any]) -> Node:
        return ("pair", kv[0], kv[1])

    def map_(self, pairs: list[Any]) -> Node:
        return ("map", [p for p in pairs if p is not None])

    def attr(self, c: list[Any]) -> Node:
        return ("attr", c[0], str(c[1]))

    def index(self, c: list[Any]) -> Node:
        return ("index", c[0], c[1])

    def call(self, c: list[Any]) -> Node:
        name = dotted(c[0])
        if name is None:
            raise ExpressionSyntaxError("only functions named like f or a.b can be called")
        return ("call", name, [a for a in c[1:] if a is not None])

    def binop(self, c: list[Any]) -> Node:
        return ("binop", str(c[1]), c[0], c[2])

    def compare(self, c: list[Any]) -> Node:
        return ("binop", str(c[1]), c[0], c[2])

    def in_(self, c: list[Any]) -> Node:
        return ("in", c[0], c[1])

    def and_(self, c: list[Any]) -> Node:
        return ("and", c[0], c[1])

    def or_(self, c: list[Any]) -> Node:
        return ("or", c[0], c[1])

    def not_(self, c: list[Any]) -> Node:
        return ("not", c[0])

    def neg(self, c: list[Any]) -> Node:
        return ("neg", c[-1])


def dotted(node: Node) -> str | None:
    if node[0] == "var":
        return str(node[1])
    if node[0] == "attr":
        parent = dotted(node[1])
        return f"{parent}.{node[2]}" if parent else None
    return None


def _compile(node: Node, expr: Expr) -> Eval:
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return lambda s: value
    if kind in ("var", "attr"):
        name = dotted(node)
        if name in CONSTANTS:
            constant = CONSTANTS[name]
            # a copy, so that assigning into the result never changes the predefined policy
            return lambda s: copy.deepcopy(constant)
    if kind == "var":
        var_name = str(node[1])
        expr.variables.add(var_name)
        return lambda s: s.get(var_name)
    if kind == "attr":
        obj, key = _compile(node[1], expr), str(node[2])
        return lambda s: get_item(obj(s), key, attribute=True)
    if kind == "index":
        obj, idx = _compile(node[1], expr), _compile(node[2], expr)
        return lambda s: get_item(obj(s), idx(s))
    if kind == "call":
        fname = str(node[1])
        expr.functions.add(fname)
        args = [_compile(a, expr) for a in node[2]]
        return lambda s: s.call(fname, [a(s) for a in args])
    if kind == "list":
        items = [_compile(i, expr) for i in node[1]]
        return lambda s: [i(s) for i in items]
    if kind == "map":
        pairs = [(_compile(p[1], expr), _compile(p[2], expr)) for p in node[1]]
        return lambda s: {_map_key(k(s)): v(s) for k, v in pairs}
    if kind == "binop":
        op, left, right = str(node[1]), _compile(node[2], expr), _compile(node[3], expr)
        apply = BINARY[op]
        return lambda s: apply(left(s), right(s))
    if kind == "in":
        item, container = _compile(node[1], expr), _compile(node[2], expr)
        return lambda s: contains(container(s), item(s))
    if kind == "and":
        a, b = _compile(node[1], expr), _compile(node[2], expr)
        return lambda s: _bool(a(s), "and") and _bool(b(s), "and")
    if kind == "or":
        a, b = _compile(node[1], expr), _compile(node[2], expr)
        return lambda s: _bool(a(s), "or") or _bool(b(s), "or")
    if kind == "not":
        a = _compile(node[1], expr)
        return lambda s: not _bool(a(s), "not")
    if kind == "neg":
        a = _compile(node[1], expr)
        return lambda s: -_number(a(s), "unary -")
    raise ExpressionSyntaxError(f"unknown expression node {kind}")  # pragma: no cover


# Value semantics ---------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return "function" if isinstance(value, PredicateRef) else type(value).__name__


def to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | str):
        return str(value)
    raise type_error(f"cannot convert {type_name(value)} to string")


def _map_key(key: Any) -> str:
    if not isinstance(key, str):
        raise type_error(f"map keys must be strings, got {type_name(key)}")
    return key


def _bool(value: Any, op: str) -> bool:
    if not isinstance(value, bool):
        raise type_error(f"operator {op} needs booleans, got {type_name(value)}")
    return value


def _number(value: Any, op: str) -> int | float:
    if not is_number(value):
        raise type_error(f"operator {op} needs numbers, got {type_name(value)}")
    return value


def get_item(obj: Any, key: Any, attribute: bool = False) -> Any:
    if isinstance(obj, dict):
        if not isinstance(key, str):
            raise type_error(f"map keys are strings, got {type_name(key)}")
        if key not in obj:
            raise key_error(key)
        return obj[key]
    if isinstance(obj, list) and not attribute:
        if not isinstance(key, int) or isinstance(key, bool):
            raise type_error(f"list index must be an integer, got {type_name(key)}")
        if key < 0 or key >= len(obj):
            raise index_error(f"list index {key} out of range (length {len(obj)})")
        return obj[key]
    raise type_error(f"cannot read {key!r} of {type_name(obj)}")


def equal(a: Any, b: Any) -> bool:
    if is_number(a) and is_number(b):
        return bool(a == b)
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def contains(container: Any, item: Any) -> bool:
    if isinstance(container, list):
        return any(equal(item, x) for x in container)
    if isinstance(container, dict):
        return isinstance(item, str) and item in container
    raise type_error(f"operator in needs a list or a map, got {type_name(container)}")


def _add(a: Any, b: Any) -> Any:
    if is_number(a) and is_number(b):
        return a + b
    scalar = (str, int, float)
    if (
        (isinstance(a, str) or isinstance(b, str))
        and isinstance(a, scalar)
        and isinstance(b, scalar)
    ):
        return to_string(a) + to_string(b)
    raise type_error(f"operator + does not apply to {type_name(a)} and {type_name(b)}")


def _arith(op: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        x, y = _number(a, op), _number(b, op)
        if op in ("/", "//", "%") and y == 0:
            raise builtin("ZeroDivisionError", "division by zero")
        return fn(x, y)

    return apply


def _floordiv(a: int | float, b: int | float) -> int | float:
    result = a // b
    return result if isinstance(a, int) and isinstance(b, int) else float(result)


def _order(op: str, fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def apply(a: Any, b: Any) -> bool:
        if (is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return fn(a, b)
        raise type_error(f"operator {op} does not apply to {type_name(a)} and {type_name(b)}")

    return apply


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": _add,
    "-": _arith("-", lambda a, b: a - b),
    "*": _arith("*", lambda a, b: a * b),
    "/": _arith("/", lambda a, b: a / b),
    "//": _arith("//", _floordiv),
    "%": _arith(
        "%",
        lambda a, b: (
            math.fmod(a, b)
            if isinstance(a, float) or isinstance(b, float)
            else int(math.fmod(a, b))
        ),
    ),
    "==": equal,
    "!=": lambda a, b: not equal(a, b),
    "<": _order("<", lambda a, b: a < b),
    "<=": _order("<=", lambda a, b: a <= b),
    ">": _order(">", lambda a, b: a > b),
    ">=": _order(">=", lambda a, b: a >= b),
}


# Values: YAML data with expressions inside ---------------------------------------------------------


def compile_value(value: Any, found: list[Expr] | None = None) -> Callable[[Scope], Any]:
    """A YAML value whose strings of the form ``${…}`` (anywhere inside maps and lists) are
    evaluated; everything else is a literal. Appends each expression to ``found`` for load-time
    checks. Raises ExpressionSyntaxError."""
    if is_expression(value):
        expr = compile_expression(value)
        if found is not None:
            found.append(expr)
        return expr
    if isinstance(value, dict):
        parts = {str(k): compile_value(v, found) for k, v in value.items()}
        return lambda s: {k: v(s) for k, v in parts.items()}
    if isinstance(value, list):
        items = [compile_value(v, found) for v in value]
        return lambda s: [i(s) for i in items]
    literal = copy.deepcopy(value)
    if isinstance(literal, dict | list):  # pragma: no cover - handled above
        return lambda s: copy.deepcopy(literal)
    return lambda s: literal


def evaluation_error(e: Exception) -> WorkflowError:
    """Python errors that escape a function become Workflows errors of the matching tag."""
    if isinstance(e, WorkflowError):
        return e
    if isinstance(e, ZeroDivisionError):
        return builtin("ZeroDivisionError", str(e))
    if isinstance(e, KeyError):
        return key_error(e.args[0] if e.args else "")
    if isinstance(e, IndexError):
        return index_error(str(e))
    if isinstance(e, TypeError):
        return type_error(str(e))
    return builtin("ValueError", str(e))


# Assignment targets: ``x``, ``x.k``, ``x[0]``, ``x.k[i].j`` ------------------------------------------

Accessor = tuple[str, Any]  # ("attr", key) or ("index", Eval)


def compile_target(text: str, found: list[Expr] | None = None) -> tuple[str, list[Accessor]]:
    """Parse an assignment target into its variable and the accessors below it."""
    try:
        node = _ToAst().transform(_PARSER.parse(text))
    except (LarkError, VisitError) as e:
        raise ExpressionSyntaxError(f"not an assignment target: {text!r}") from e
    accessors: list[Accessor] = []
    while node[0] in ("attr", "index"):
        if node[0] == "attr":
            accessors.append(("attr", str(node[2])))
        else:
            holder = Expr(text, lambda s: None)
            holder.run = _compile(node[2], holder)
            if found is not None:
                found.append(holder)
            accessors.append(("index", holder))
        node = node[1]
    if node[0] != "var":
        raise ExpressionSyntaxError(f"not an assignment target: {text!r}")
    return str(node[1]), list(reversed(accessors))
