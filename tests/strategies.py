"""Hypothesis strategies that build valid domain events from their pydantic field declarations."""

from __future__ import annotations

import enum
import types
import typing
from datetime import UTC, datetime
from typing import Any

import annotated_types as at
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

# Avro timestamp-micros holds microseconds since the epoch; stay within a sane range.
_MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
# Domain values strip surrounding whitespace, so generated strings carry something else too.
_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24
).filter(str.strip)


def _bounded_float(metadata: list[Any]) -> st.SearchStrategy[float]:
    low = high = None
    for item in metadata:
        if isinstance(item, at.Ge | at.Gt):
            low = float(item.ge if isinstance(item, at.Ge) else item.gt)
        if isinstance(item, at.Le | at.Lt):
            high = float(item.le if isinstance(item, at.Le) else item.lt)
    return st.floats(
        min_value=low,
        max_value=high,
        allow_nan=False,
        allow_infinity=False,
        exclude_min=False,
        exclude_max=False,
    )


def _bounded_int(metadata: list[Any]) -> st.SearchStrategy[int]:
    low, high = -(2**63), 2**63 - 1
    for item in metadata:
        if isinstance(item, at.Ge):
            low = int(item.ge)  # type: ignore[call-overload]
        if isinstance(item, at.Le):
            high = int(item.le)  # type: ignore[call-overload]
    return st.integers(min_value=low, max_value=high)


def for_annotation(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return for_annotation(args[0], [*metadata, *args[1:]])
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return st.none() | for_annotation(inner[0], metadata)
    if origin is tuple:
        return st.lists(for_annotation(args[0], []), max_size=4).map(tuple)
    if annotation is str:
        return _TEXT
    if annotation is float:
        return _bounded_float(metadata)
    if annotation is int:
        return _bounded_int(metadata)
    if annotation is datetime:
        return _MOMENTS
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from(list(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    raise TypeError(f"no strategy for {annotation!r}")


def _field(info: FieldInfo, annotation: Any) -> st.SearchStrategy[Any]:
    return for_annotation(annotation, list(info.metadata))


def model_strategy(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(model, include_extras=True)
    fields = {name: _field(info, hints[name]) for name, info in model.model_fields.items()}
    return st.fixed_dictionaries(fields).map(model.model_validate)
