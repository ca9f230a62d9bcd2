"""Imports read from the source with ``ast``: who imports what, transitively.

One parser serves two readers: the layout's import rules (tests/policy/test_import_rules.py) and
the release plan (meridian/release/plan.py), which releases the services that import a changed
module of the core. Every import counts: top-level, inside functions, under ``if TYPE_CHECKING``
(a deferred import still runs when its function does, so a release must not miss it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    file: str  # relative to the root, with forward slashes
    line: int
    module: str  # absolute dotted name


def module_name(file: str) -> str:
    """``meridian/codec/events.py`` → ``meridian.codec.events``; a package's ``__init__.py`` is the
    package itself."""
    return file.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def imports_in(file: str, source: str) -> Iterator[Import]:
    """Every import in the module ``file`` (its path relative to the root) with text ``source``,
    resolved to absolute names. ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a
    module: ``from meridian import embedded``)."""
    package = module_name(file).split(".")
    if not file.endswith("__init__.py"):
        package = package[:-1]
    tree = ast.parse(source, filename=file)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(file, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield Import(file, node.lineno, module)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(file, node.lineno, f"{module}.{alias.name}")


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every import in the module at ``path``, a file under ``root`` (see ``imports_in``)."""
    return imports_in(path.relative_to(root).as_posix(), path.read_text(encoding="utf-8"))


class ImportGraph:
    """The modules of a source tree and what each imports among them.

    Importing ``a.b.c`` runs ``a`` and ``a.b`` first, so a module also depends on the packages
    that contain it. Names that are not modules of the tree (the standard library, third parties,
    ``from m import some_function``) are dropped: ``from m import f`` depends on ``m``."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        """``sources``: file path (relative, forward slashes, ``.py``) → its text."""
        self.files = {module_name(file): file for file in sources}
        self._edges: dict[str, set[str]] = {}
        for file, source in sources.items():
            module = module_name(file)
            edges = self._edges.setdefault(module, set())
            edges.update(self._parents(module))
            for imported in imports_in(file, source):
                found = self._known(imported.module)
                if found is not None and found != module:
                    edges.add(found)
                    edges.update(self._parents(found))

    def _known(self, name: str) -> str | None:
        """The longest prefix of ``name`` that is a module of the tree."""
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in self.files:
                return candidate
            parts.pop()
        return None

    def _parents(self, module: str) -> Iterator[str]:
        parts = module.split(".")
        for end in range(1, len(parts)):
            parent = ".".join(parts[:end])
            if parent in self.files:
                yield parent

    def module_of(self, file: str) -> str | None:
        """The module a file of the tree belongs to: itself for a ``.py`` file, else the package
        of its directory (a data file is part of the package that ships it); None outside."""
        if file.endswith(".py"):
            name = module_name(file)
            return name if name in self.files else None
        return self._known(module_name(file.rsplit("/", 1)[0]) if "/" in file else "")

    def closure(self, roots: Iterable[str], excluding: tuple[str, ...] = ()) -> set[str]:
        """``roots`` and every module they import, transitively, not entering the packages
        ``excluding`` (nor anything reached only through them)."""
        seen: set[str] = set()
        stack = [r for r in roots if r in self.files]
        while stack:
            module = stack.pop()
            if module in seen or _within(module, excluding):
                continue
            seen.add(module)
            stack.extend(m for m in self._edges.get(module, ()) if m not in seen)
        return seen

    def modules_under(self, package: str) -> list[str]:
        """``package`` and every module inside it."""
        return [m for m in self.files if m == package or m.startswith(package + ".")]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)
