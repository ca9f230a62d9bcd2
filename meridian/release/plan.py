"""``meridian release plan``: which deployables a release changes, and the paths that cause each.

The rules, applied to ``git diff --name-only FROM TO`` (first match wins):

1. docs (``docs/``, any ``*.md``), ``tests/``, ``loadtest/``, ``.ci/`` and the pipeline's own
   configuration (``.github/``, the release tooling: ``meridian/release/``, its command
   ``meridian/runtime/release_cli.py`` and the canary's ``meridian/gcp/monitoring.py``) release
   nothing;
2. ``uv.lock`` and ``pyproject.toml`` release every image: every service and the geofence job;
3. ``terraform/environments/ENV/`` releases ``infrastructure:ENV``; the rest of ``terraform/``
   (its modules) every environment's infrastructure;
4. ``workflows/NAME.yaml`` releases ``workflow:NAME``;
5. ``schemas/``: the schema step, and the services that produce or consume the event types that
   changed (an ``.avsc``'s event type; in ``catalog.yaml``, the entries that differ: an event type,
   a subscription's consumer, a service's own entry), after the schema gate
   (meridian/release/schema_gate.py) has passed every changed ``.avsc``;
6. a path in a service's package, or one of its catalog ``sources``, releases that service;
7. any other module of ``meridian/``, ``services/`` or ``pipelines/`` releases the services whose
   imports reach it (meridian/release/deployables.py: ``Revision.imported``);
8. anything else releases nothing, and the plan says so for each path.

A first release (no earlier tag) has every file of ``TO`` as changed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from meridian.domain.errors import CatalogError
from meridian.release.deployables import (
    CATALOG,
    SCHEMA_STEP,
    Deployable,
    Revision,
    infrastructure,
    read_revision,
    workflow,
)
from meridian.release.git import Repository
from meridian.release.imports import module_name
from meridian.release.schema_gate import check_additive

RELEASES_NOTHING = (
    ("docs/", "documentation"),
    ("tests/", "tests"),
    ("loadtest/", "load tests"),
    (".ci/", "CI tooling"),
    (".github/", "the pipeline's configuration"),
    ("meridian/release/", "the release tooling"),
    ("meridian/runtime/release_cli.py", "the release tooling"),
    ("meridian/gcp/monitoring.py", "the release tooling (the canary's metrics)"),
)
KIND_ORDER = ("schemas", "service", "pipeline", "workflow", "infrastructure")
EVERY_IMAGE = frozenset({"uv.lock", "pyproject.toml"})


@dataclass(frozen=True)
class Release:
    deployable: Deployable
    because: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """The deployables to release from ``base`` (None: the first release) to ``head``."""

    base: str | None
    head: str
    releases: tuple[Release, ...]
    unreleased: dict[str, str] = field(default_factory=dict)  # path → why it releases nothing

    def of_kind(self, kind: str) -> list[Release]:
        return [r for r in self.releases if r.deployable.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.base,
            "to": self.head,
            "deployables": [
                {"name": r.deployable.name, "kind": r.deployable.kind, "because": list(r.because)}
                for r in self.releases
            ],
            "unreleased": self.unreleased,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            base=data["from"],
            head=data["to"],
            releases=tuple(
                Release(Deployable(d["kind"], d["name"]), tuple(d["because"]))
                for d in data["deployables"]
            ),
            unreleased=dict(data.get("unreleased", {})),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def plan_release(repo: Repository, base: str | None, head: str) -> Plan:
    """The plan from ``base`` to ``head``. Raises BreakingSchemaChange (the schema gate) or
    CatalogError (a catalog that does not load) before anything is built."""
    new = read_revision(repo, head)
    old = _old_revision(repo, base)
    changed = repo.changed_files(base, head) if base else repo.files(head)
    _gate_schemas(repo, base, head, changed, old, new)
    causes: dict[Deployable, set[str]] = defaultdict(set)
    unreleased: dict[str, str] = {}
    for path in changed:
        released = _releases_of(repo, base, head, path, old, new)
        if isinstance(released, str):
            unreleased[path] = released
        for deployable in () if isinstance(released, str) else released:
            causes[deployable].add(path)
    releases = tuple(Release(d, tuple(sorted(causes[d]))) for d in sorted(causes, key=_in_order))
    return Plan(base=base, head=head, releases=releases, unreleased=unreleased)


def _in_order(deployable: Deployable) -> tuple[int, str]:
    """The order a release applies them in: the topology before the code that publishes on it,
    the services (behind their canaries) before the job and the workflows that call them, the
    rest of the infrastructure last."""
    return KIND_ORDER.index(deployable.kind), deployable.name


def _old_revision(repo: Repository, base: str | None) -> Revision | None:
    if base is None:
        return None
    try:
        return read_revision(repo, base)
    except CatalogError:
        return None  # an old release from before the catalog's current shape: judge by the new


def _gate_schemas(
    repo: Repository,
    base: str | None,
    head: str,
    changed: list[str],
    old: Revision | None,
    new: Revision,
) -> None:
    if base is None or old is None:
        return
    avsc = [p for p in changed if p.startswith("schemas/") and p.endswith(".avsc")]
    before, after = repo.read(base, avsc), repo.read(head, avsc)
    for path in avsc:
        if path in before and path in after:
            names = _event_types_of(path, old) | _event_types_of(path, new)
            check_additive(", ".join(sorted(names)) or path, before[path], after[path])


def _releases_of(
    repo: Repository, base: str | None, head: str, path: str, old: Revision | None, new: Revision
) -> set[Deployable] | str:
    """The deployables ``path`` releases, or why it releases none."""
    for prefix, what in RELEASES_NOTHING:
        if path.startswith(prefix):
            return what
    if path.endswith(".md"):
        return "documentation"
    if path in EVERY_IMAGE:
        return set(new.services.values())
    if path.startswith("terraform/"):
        parts = path.split("/")
        if parts[1] == "environments" and len(parts) > 3:
            return {infrastructure(parts[2])}
        return {infrastructure(e) for e in new.environments} or "no Terraform environment"
    if path.startswith("workflows/"):
        if path.endswith(".yaml") and path.count("/") == 1:
            return {workflow(path.removeprefix("workflows/").removesuffix(".yaml"))}
        return "not a workflow definition"
    if path.startswith("schemas/"):
        return _schema_releases(repo, base, head, path, old, new)
    owners = {
        name
        for name, spec in new.catalog.services.items()
        if path.startswith(new.package_of(name)) or _matches(path, spec.sources)
    }
    if owners:
        return {new.services[n] for n in owners}
    if path.split("/", 1)[0] in ("meridian", "services", "pipelines"):
        module = new.graph.module_of(path) or module_name(path)
        users = {name for name, modules in new.imported.items() if module in modules}
        if users:
            return {new.services[n] for n in users}
        return f"no service imports {module}"
    return "not part of any deployable"


def _matches(path: str, sources: Iterable[str]) -> bool:
    return any(path == s or (s.endswith("/") and path.startswith(s)) for s in sources)


def _event_types_of(path: str, revision: Revision | None) -> set[str]:
    if revision is None:
        return set()
    return {
        name
        for name, spec in revision.catalog.event_types.items()
        if f"schemas/{spec.schema_file}" == path
    }


def _schema_releases(
    repo: Repository, base: str | None, head: str, path: str, old: Revision | None, new: Revision
) -> set[Deployable] | str:
    revisions = [r for r in (old, new) if r is not None]
    if path.endswith(".avsc"):
        types = _event_types_of(path, old) | _event_types_of(path, new)
        return {SCHEMA_STEP} | _users(revisions, types, set())
    if path != CATALOG or base is None:
        return {SCHEMA_STEP}
    texts = [repo.read(ref, [CATALOG]).get(CATALOG, "") for ref in (base, head)]
    before, after = (yaml.safe_load(t) or {} for t in texts)
    differs = {
        section: _changed_entries(before.get(section), after.get(section))
        for section in set(before) | set(after)
    }
    if not any(differs.values()):
        return "comments and layout only"
    released: set[Deployable] = set()
    if any(differs.get(s) for s in ("topics", "event_types", "subscriptions", "version")):
        released.add(SCHEMA_STEP)
    if differs.get("triggers"):
        released |= {infrastructure(e) for e in new.environments}
    subscribers = set().union(
        *(r.subscription_users(s) for r in revisions for s in differs.get("subscriptions", ()))
    )
    services = set(differs.get("services", ())) & set(new.services)
    released |= _users(revisions, set(differs.get("event_types", ())), subscribers | services)
    return released


def _users(revisions: list[Revision], event_types: set[str], services: set[str]) -> set[Deployable]:
    users = set(services)
    for revision in revisions:
        for event_type in event_types:
            users |= revision.event_type_users(event_type)
    new = revisions[-1]
    return {new.services[u] for u in users if u in new.services}


def _changed_entries(before: Any, after: Any) -> set[str]:
    """The keys of a catalog section whose entries differ (every key for a scalar section)."""
    if before == after:
        return set()
    if isinstance(before, dict) and isinstance(after, dict):
        return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    return {"*"}
