"""The import rules of the layout (docs/architecture.md), read from the source with ``ast``.

Every module under meridian/, services/ and pipelines/ is parsed, and every import in it counts:
top-level, inside functions, under ``if TYPE_CHECKING``. The rules:

- core: the shared core (meridian/ except gcp/, embedded/, adapters.py and runtime/) never
  imports ``meridian.embedded`` or ``meridian.gcp``; the adapters import the core, not the other
  way round.
- adapters: ``meridian.gcp`` never imports ``meridian.embedded``, nor the other way round.
- handlers: a service's handlers (``services/**/handlers.py``, ``services/**/handlers/**``) never
  import FastAPI, Starlette, Beam or a Google client (``google.cloud``, ``google.api_core``).
- services: a service never imports another service's package (each of services/<name>/ and
  services/reactors/<name>/ is one service); what two services share belongs in meridian/.
- beam: only pipelines/ imports Beam (``apache_beam``); the core and the services run from the
  service image, which is built without the ``pipeline`` extra (handlers are the handlers rule's).

The imports are read by meridian/release/imports.py, the parser the release plan uses too.
A violation names the importing file, the line and the rule. The checker itself is tested on
small module trees written to a temporary directory, so the test fails when a rule is broken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from meridian.release.imports import Import, imports_of

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("meridian", "services", "pipelines")


@dataclass(frozen=True)
class Rule:
    name: str
    says: str
    applies_to: Callable[[str], bool]
    forbids: Callable[[Import], bool]


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_core(file: str) -> bool:
    return file.startswith("meridian/") and not (
        file.startswith(("meridian/gcp/", "meridian/embedded/", "meridian/runtime/"))
        or file == "meridian/adapters.py"
    )


def _is_handler(file: str) -> bool:
    return file.startswith("services/") and (file.endswith("/handlers.py") or "/handlers/" in file)


def service_of(file_or_module: str) -> str | None:
    """``services/reactors/eta/x.py`` or ``services.reactors.eta.x`` → ``reactors.eta``;
    ``services/command/...`` → ``command``; None outside services/ (or for a bare package)."""
    parts = file_or_module.removesuffix(".py").replace("/", ".").split(".")
    if parts[0] != "services" or len(parts) < 2 or parts[1] == "__init__":
        return None
    if parts[1] == "reactors":
        if len(parts) < 3 or parts[2] == "__init__":
            return None
        return f"reactors.{parts[2]}"
    return parts[1]


RULES = (
    Rule(
        "core",
        "the core never imports meridian.embedded or meridian.gcp",
        _is_core,
        lambda i: _within(i.module, "meridian.embedded", "meridian.gcp"),
    ),
    Rule(
        "adapters",
        "meridian.gcp never imports meridian.embedded",
        lambda f: f.startswith("meridian/gcp/"),
        lambda i: _within(i.module, "meridian.embedded"),
    ),
    Rule(
        "adapters",
        "meridian.embedded never imports meridian.gcp",
        lambda f: f.startswith("meridian/embedded/"),
        lambda i: _within(i.module, "meridian.gcp"),
    ),
    Rule(
        "handlers",
        "handlers never import FastAPI, Starlette, Beam or a Google client",
        _is_handler,
        lambda i: _within(
            i.module, "fastapi", "starlette", "apache_beam", "google.cloud", "google.api_core"
        ),
    ),
    Rule(
        "services",
        "a service never imports another service's package",
        lambda f: service_of(f) is not None,
        lambda i: service_of(i.module) not in (None, service_of(i.file)),
    ),
    Rule(
        "beam",
        "only pipelines/ imports Beam: the service image has none",
        lambda f: f.startswith(("meridian/", "services/")) and not _is_handler(f),
        lambda i: _within(i.module, "apache_beam"),
    ),
)


def violations(root: Path) -> list[str]:
    """Each broken rule as ``file:line: rule (what it says): imports module``, once per line."""
    found: list[str] = []
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            seen: set[tuple[int, str]] = set()
            for imported in imports_of(root, path):
                for rule in RULES:
                    if (imported.line, rule.says) in seen:
                        continue
                    if rule.applies_to(imported.file) and rule.forbids(imported):
                        seen.add((imported.line, rule.says))
                        found.append(
                            f"{imported.file}:{imported.line}: {rule.name} rule ({rule.says}): "
                            f"imports {imported.module}"
                        )
    return found


def test_the_tree_keeps_the_import_rules() -> None:
    found = violations(ROOT)
    assert not found, "import rules broken:\n" + "\n".join(found)


# The checker on small trees -----------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def test_a_clean_tree_has_no_violations(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "meridian/__init__.py": "",
            "meridian/ports.py": "import abc\n",
            "meridian/adapters.py": "from meridian.embedded import store\nfrom meridian import gcp\n",
            "meridian/runtime/cli.py": "import meridian.embedded.docstore\n",
            "meridian/gcp/firestore.py": "from meridian.documents import paths\n",
            "meridian/embedded/store.py": "from ..documents.paths import check\nfrom . import db\n",
            "services/command/handlers/parcels.py": "from services.command.handlers import Deps\n",
            "services/command/app.py": "from fastapi import FastAPI\n",
            "services/reactors/eta/handlers.py": "from services.reactors.eta.board import Board\n",
            "pipelines/geofence/pipeline.py": "import apache_beam\n",
        },
    )
    assert violations(root) == []


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        (
            "meridian/edge/push.py",
            "import os\n\ndef f():\n    from meridian.embedded.pubsub import broker\n",
            "meridian/edge/push.py:4: core rule (the core never imports meridian.embedded or "
            "meridian.gcp): imports meridian.embedded.pubsub",
        ),
        (
            "meridian/ports.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import meridian.gcp.x\n",
            "meridian/ports.py:3: core rule (the core never imports meridian.embedded or "
            "meridian.gcp): imports meridian.gcp.x",
        ),
        (
            "meridian/app/records.py",
            "from .. import embedded\n",
            "meridian/app/records.py:1: core rule (the core never imports meridian.embedded or "
            "meridian.gcp): imports meridian.embedded",
        ),
        (
            "meridian/gcp/firestore.py",
            "from meridian.embedded.docstore.paths import check\n",
            "meridian/gcp/firestore.py:1: adapters rule (meridian.gcp never imports "
            "meridian.embedded): imports meridian.embedded.docstore.paths",
        ),
        (
            "meridian/embedded/eventarc.py",
            "\nfrom ..gcp import identity\n",
            "meridian/embedded/eventarc.py:2: adapters rule (meridian.embedded never imports "
            "meridian.gcp): imports meridian.gcp",
        ),
        (
            "services/reactors/eta/handlers.py",
            "def g():\n    from starlette.requests import Request\n",
            "services/reactors/eta/handlers.py:2: handlers rule (handlers never import FastAPI, "
            "Starlette, Beam or a Google client): imports starlette.requests",
        ),
        (
            "services/command/handlers/pod.py",
            "from google.cloud import storage\n",
            "services/command/handlers/pod.py:1: handlers rule (handlers never import FastAPI, "
            "Starlette, Beam or a Google client): imports google.cloud",
        ),
        (
            "services/dispatch/handlers.py",
            "import apache_beam as beam\n",
            "services/dispatch/handlers.py:1: handlers rule (handlers never import FastAPI, "
            "Starlette, Beam or a Google client): imports apache_beam",
        ),
        (
            "services/command/handlers/dispatch.py",
            "from services.dispatch.records import Offer\n",
            "services/command/handlers/dispatch.py:1: services rule (a service never imports "
            "another service's package): imports services.dispatch.records",
        ),
        (
            "services/reactors/pod/bootstrap.py",
            "from ..eta import board\n",
            "services/reactors/pod/bootstrap.py:1: services rule (a service never imports "
            "another service's package): imports services.reactors.eta",
        ),
        (
            "meridian/codec/events.py",
            "def f():\n    import apache_beam.coders\n",
            "meridian/codec/events.py:2: beam rule (only pipelines/ imports Beam: the service "
            "image has none): imports apache_beam.coders",
        ),
        (
            "services/live_map/pings.py",
            "from apache_beam import DoFn\n",
            "services/live_map/pings.py:1: beam rule (only pipelines/ imports Beam: the service "
            "image has none): imports apache_beam",
        ),
    ],
)
def test_each_rule_reports_its_violation_by_file_line_and_rule(
    tmp_path: Path, file: str, source: str, expected: str
) -> None:
    root = _tree(tmp_path, {file: source, "meridian/__init__.py": "", "services/__init__.py": ""})
    assert violations(root) == [expected]
