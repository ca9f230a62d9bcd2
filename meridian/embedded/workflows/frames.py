"""Variables: one frame per (sub)workflow call; a parallel branch's frame reads and writes its
``shared`` names through its parent and keeps everything else as a local copy (reference §6.3)."""

from __future__ import annotations

import copy
from typing import Any

from .errors import builtin, index_error, key_error, type_error
from .expressions import Accessor, Scope, type_name
from .stdlib import Runtime, call_function


class Frame:
    """A view of variables whose dict lives inside the persisted state, so saving the state
    saves the variables."""

    def __init__(
        self,
        variables: dict[str, Any],
        workflow: str,
        depth: int = 1,
        parent: Frame | None = None,
        shared: frozenset[str] = frozenset(),
        parallel_depth: int = 0,
    ) -> None:
        self.vars = variables
        self.workflow = workflow
        self.depth = depth
        self.parent = parent
        self.shared = shared
        self.parallel_depth = parallel_depth

    def has(self, name: str) -> bool:
        if name in self.shared and self.parent is not None:
            return self.parent.has(name)
        return name in self.vars

    def get(self, name: str) -> Any:
        if name in self.shared and self.parent is not None:
            return self.parent.get(name)
        if name not in self.vars:
            raise builtin("KeyError", f"variable {name} is not defined")
        return self.vars[name]

    def set(self, name: str, value: Any) -> None:
        if name in self.shared and self.parent is not None:
            self.parent.set(name, value)
        else:
            self.vars[name] = value

    def visible(self) -> dict[str, Any]:
        """Every variable this frame can read, for copying into a new branch."""
        seen = dict(self.vars)
        if self.parent is not None:
            for name in self.shared:
                if self.parent.has(name):
                    seen[name] = self.parent.get(name)
        return seen

    def branch(self, shared: list[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The local variables of a new branch: a deep copy of all but the shared ones."""
        local = {k: copy.deepcopy(v) for k, v in self.visible().items() if k not in shared}
        local.update(extra or {})
        return local

    def assign(self, name: str, accessors: list[Accessor], value: Any, scope: Scope) -> None:
        """``x: v``, ``x.k: v``, ``x[i]: v``; missing intermediate map keys are created."""
        if not accessors:
            self.set(name, value)
            return
        container = self.get(name)
        for position, (kind, key) in enumerate(accessors):
            if kind == "index":
                key = key(scope)
            last = position == len(accessors) - 1
            if isinstance(container, dict):
                if not isinstance(key, str):
                    raise type_error(f"map keys are strings, got {type_name(key)}")
                if last:
                    container[key] = value
                else:
                    container = container.setdefault(key, {})
            elif isinstance(container, list) and kind == "index":
                if not isinstance(key, int) or isinstance(key, bool):
                    raise type_error(f"list index must be an integer, got {type_name(key)}")
                if not 0 <= key < len(container):
                    raise index_error(f"list index {key} out of range (length {len(container)})")
                if last:
                    container[key] = value
                else:
                    container = container[key]
            else:
                raise type_error(f"cannot assign into {type_name(container)} at {key!r}")


class FrameScope:
    """What expressions see: the frame's variables and the standard library."""

    def __init__(self, frame: Frame, runtime: Runtime) -> None:
        self.frame = frame
        self.runtime = runtime

    def get(self, name: str) -> Any:
        return self.frame.get(name)

    def call(self, name: str, args: list[Any]) -> Any:
        return call_function(name, args, self.runtime)


def missing_key(name: str) -> Exception:
    return key_error(name)
