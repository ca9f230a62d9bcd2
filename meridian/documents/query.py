"""Firestore's single-collection queries: which ones are valid, and what they answer.

``check_query`` is what every DocumentStore refuses (both adapters check it before running a
query); ``matches`` and ``order_and_limit`` are Firestore's exact semantics (type-aware
comparisons, the implicit order by inequality fields, a document without an ordered-by field left
out) for a store that evaluates queries itself. ``run`` evaluates one over documents in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cmp_to_key
from typing import Any

from meridian.domain.errors import ValidationError
from meridian.ports import Document, Query

from .paths import check_collection_path, split_field_path
from .values import MISSING, equal, get_field, sort_key

INEQUALITY = frozenset({"<", "<=", ">", ">=", "!="})
OPERATORS = frozenset({"==", *INEQUALITY, "in"})


def check_query(query: Query) -> None:
    """Raise ValidationError (LimitExceeded for the collection path) for a query no store runs."""
    check_collection_path(query.collection)
    for field_path, op, value in query.filters:
        split_field_path(field_path)
        if op == "in" and (not isinstance(value, list | tuple) or not value):
            raise ValidationError(f"an 'in' filter on {field_path} needs a non-empty list")
        if op not in OPERATORS:
            raise ValidationError(f"unsupported query operator {op!r}")
    if query.limit_to is not None and query.limit_to < 0:
        raise ValidationError("a query limit cannot be negative")


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


def order_and_limit(documents: list[Document], query: Query) -> list[Document]:
    orders = list(query.orders)
    if not orders:
        # Firestore orders by the inequality fields first when no order is given.
        seen: list[str] = []
        for field_path, op, _ in query.filters:
            if op in INEQUALITY and field_path not in seen:
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


def run(query: Query, candidates: Iterable[Document]) -> list[Document]:
    """The answer to ``query`` among ``candidates`` (documents of its collection, or a superset
    that the filters narrow down): checked, filtered, ordered and limited as Firestore does."""
    check_query(query)
    found = [
        d
        for d in candidates
        if all(matches(get_field(d.data, f), op, v) for f, op, v in query.filters)
    ]
    return order_and_limit(found, query)
