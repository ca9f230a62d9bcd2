"""Single-collection queries: SQL narrows the candidates (using the JSON1 expression indexes),
then Firestore's exact semantics are applied in Python (type-aware comparisons, implicit ordering).

The SQL part only ever returns a superset of the answer: SQLite compares numbers numerically and
text as UTF-8 bytes, like Firestore, and where its typing differs (``true`` reads as 1, other
types compare by SQLite's type order) the Python pass removes the extra rows.
"""

from __future__ import annotations

import sqlite3
from functools import cmp_to_key
from typing import Any

from meridian.domain.errors import ValidationError
from meridian.ports import Document, Query

from .db import json_path
from .paths import check_collection_path, split_field_path
from .values import MISSING, decode, equal, from_micros, get_field, sort_key

_INEQUALITY = {"<", "<=", ">", ">=", "!="}
_SQL_OPS = {"==": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _pushable(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def expression(field_path: str) -> str:
    """The SQL expression of a field; expression indexes are created with the same text."""
    path = json_path(split_field_path(field_path)).replace("'", "''")
    return f"json_extract(data, '{path}')"


def _type_rank(value: Any) -> int:
    rank: int = sort_key(value)[0]
    return rank


def matches(value: Any, op: str, target: Any) -> bool:
    """One Firestore filter on one field value (``MISSING`` never matches)."""
    if value is MISSING:
        return False
    if op == "==":
        return equal(value, target)
    if op == "!=":
        return not equal(value, target)
    if op == "in":
        return any(equal(value, t) for t in target)
    # Range filters only match values of the same type (numbers count as one type).
    if _type_rank(value) != _type_rank(target):
        return False
    a, b = sort_key(value), sort_key(target)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def check_query(query: Query) -> None:
    check_collection_path(query.collection)
    for field_path, op, value in query.filters:
        split_field_path(field_path)
        if op == "in" and (not isinstance(value, list | tuple) or not value):
            raise ValidationError(f"an 'in' filter on {field_path} needs a non-empty list")
        if op not in {*_SQL_OPS, "!=", "in"}:
            raise ValidationError(f"unsupported query operator {op!r}")
    if query.limit_to is not None and query.limit_to < 0:
        raise ValidationError("a query limit cannot be negative")


def run_query(conn: sqlite3.Connection, query: Query) -> list[Document]:
    check_query(query)
    sql = "SELECT path, data, create_time, update_time FROM documents WHERE collection = ?"
    params: list[Any] = [query.collection]
    for field_path, op, value in query.filters:
        if op in _SQL_OPS and _pushable(value):
            sql += f" AND {expression(field_path)} {_SQL_OPS[op]} ?"
            params.append(value)
        elif op == "in" and all(_pushable(v) for v in value):
            sql += f" AND {expression(field_path)} IN ({', '.join('?' * len(value))})"
            params.extend(value)
    documents = []
    for path, data, created, updated in conn.execute(sql, params):
        fields = decode(data) or {}
        if all(matches(get_field(fields, f), op, v) for f, op, v in query.filters):
            documents.append(Document(path, fields, from_micros(created), from_micros(updated)))
    return order_and_limit(documents, query)


def order_and_limit(documents: list[Document], query: Query) -> list[Document]:
    orders = list(query.orders)
    if not orders:
        # Firestore orders by the inequality fields first when no order is given.
        seen: list[str] = []
        for field_path, op, _ in query.filters:
            if op in _INEQUALITY and field_path not in seen:
                seen.append(field_path)
        orders = [(f, "asc") for f in seen]
    # A document without an ordered-by field is not in the result (Firestore's index semantics).
    documents = [
        d for d in documents if all(get_field(d.data, f) is not MISSING for f, _ in orders)
    ]
    last_direction = orders[-1][1] if orders else "asc"

    def compare(a: Document, b: Document) -> int:
        for field_path, direction in orders:
            ka, kb = (
                sort_key(get_field(a.data, field_path)),
                sort_key(get_field(b.data, field_path)),
            )
            if ka != kb:
                result = -1 if ka < kb else 1
                return -result if direction == "desc" else result
        # Ties break on the document name, in the direction of the last order.
        na, nb = a.path.encode(), b.path.encode()
        result = (na > nb) - (na < nb)
        return -result if last_direction == "desc" else result

    documents.sort(key=cmp_to_key(compare))
    return documents if query.limit_to is None else documents[: query.limit_to]
