"""Reads a workflow file (YAML or JSON) keeping the line of every map and key, so refusals can
name where the construct is."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import DefinitionError


class LineMap(dict[str, Any]):
    """A YAML map that remembers its own line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    line: int = 0


class _Loader(yaml.SafeLoader):
    """SafeLoader that records marks; timestamps stay strings, as Workflows reads them."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        mapping = LineMap()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in mapping:
                raise DefinitionError(
                    f"duplicate key {key!r} at line {key_node.start_mark.line + 1}"
                )
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> Any:
        items = LineList(self.construct_object(child, deep=True) for child in node.value)
        items.line = node.start_mark.line + 1
        return items


def _construct_map(loader: _Loader, node: Node) -> Any:
    assert isinstance(node, MappingNode)
    return loader.construct_mapping(node)


def _construct_seq(loader: _Loader, node: Node) -> Any:
    assert isinstance(node, SequenceNode)
    return loader.construct_sequence(node)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _construct_str(loader: _Loader, node: Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_str)


def load_source(text: str) -> LineMap | LineList:
    """Parse YAML or JSON (JSON is read as YAML, which it is a subset of)."""
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise DefinitionError(f"not valid YAML/JSON at line {line}: {e.problem}") from e
    if not isinstance(document, LineMap | LineList):
        raise DefinitionError("a workflow file is a map of workflows or a list of steps (line 1)")
    return document


def line_of(value: Any, default: int = 0) -> int:
    return int(getattr(value, "line", default) or default)
