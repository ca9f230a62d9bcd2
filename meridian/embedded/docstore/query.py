"""Single-collection queries on SQLite: SQL narrows the candidates (using the JSON1 expression
indexes), then Firestore's exact semantics (``meridian.documents.query``: type-aware comparisons,
implicit ordering) are applied in Python.

The SQL part only ever returns a superset of the answer: SQLite compares numbers numerically and
text as UTF-8 bytes, like Firestore, and where its typing differs (``true`` reads as 1, other
types compare by SQLite's type order) the Python pass removes the extra rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from meridian.documents.paths import split_field_path
from meridian.documents.query import check_query, matches, order_and_limit
from meridian.documents.values import get_field
from meridian.ports import Document, Query

from .db import json_path
from .values import decode, from_micros

_SQL_OPS = {"==": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _pushable(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def expression(field_path: str) -> str:
    """The SQL expression of a field; expression indexes are created with the same text."""
    path = json_path(split_field_path(field_path)).replace("'", "''")
    return f"json_extract(data, '{path}')"


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
