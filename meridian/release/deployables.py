"""What a release can deploy, and what each is built from, read from a revision of the repository.

- each Cloud Run service of the catalog (``schemas/catalog.yaml``, its ``services``): its package,
  the modules it imports (transitively), its catalog ``sources``; started through the image's
  entrypoint (``meridian serve``, ``ENTRYPOINT``), whose imports count too;
- the geofence Flex Template (the catalog's ``pipeline`` service): its package and its imports;
- each workflow (``workflows/NAME.yaml``): ``workflow:NAME``;
- the infrastructure, one Terraform root per environment (``terraform/environments/ENV``):
  ``infrastructure:ENV``;
- the schema step (``schemas``): the catalog's Pub/Sub topology, its topics, schemas and
  subscriptions, which Terraform builds from the catalog (``module.pubsub``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from meridian.catalog import Catalog, load_catalog
from meridian.domain.errors import CatalogError
from meridian.release.git import Repository
from meridian.release.imports import ImportGraph

Kind = Literal["service", "pipeline", "workflow", "infrastructure", "schemas"]

CATALOG = "schemas/catalog.yaml"
PACKAGES = ("meridian", "services", "pipelines")
# The image's entrypoint (`meridian serve SERVICE`): every Cloud Run service runs its imports.
ENTRYPOINT = "meridian.runtime.cli"
# The release tooling: mounted in the CLI, never run by a service, so its imports are not followed.
RELEASE_TOOLING = ("meridian.release", "meridian.runtime.release_cli", "meridian.gcp.monitoring")
SCHEMAS = "schemas"


@dataclass(frozen=True, order=True)
class Deployable:
    kind: Kind
    name: str  # "command", "geofence-pipeline", "workflow:dispatch", "infrastructure:dev", "schemas"


def workflow(name: str) -> Deployable:
    return Deployable("workflow", f"workflow:{name}")


def infrastructure(environment: str) -> Deployable:
    return Deployable("infrastructure", f"infrastructure:{environment}")


SCHEMA_STEP = Deployable("schemas", SCHEMAS)


@dataclass(frozen=True)
class Revision:
    """The deployables of one revision, and what they are built from."""

    catalog: Catalog
    graph: ImportGraph
    workflows: tuple[str, ...]
    environments: tuple[str, ...]

    @cached_property
    def services(self) -> dict[str, Deployable]:
        return {
            name: Deployable("pipeline" if spec.kind == "pipeline" else "service", name)
            for name, spec in self.catalog.services.items()
        }

    @cached_property
    def imported(self) -> dict[str, set[str]]:
        """Each catalog service → every module it runs (its package, its imports, the
        entrypoint's for a Cloud Run service)."""
        found: dict[str, set[str]] = {}
        for name, spec in self.catalog.services.items():
            roots = self.graph.modules_under(spec.package)
            if spec.kind != "pipeline":
                roots.append(ENTRYPOINT)
            found[name] = self.graph.closure(roots, excluding=RELEASE_TOOLING)
        return found

    def package_of(self, service: str) -> str:
        return self.catalog.services[service].package.replace(".", "/") + "/"

    def event_type_users(self, event_type: str) -> set[str]:
        """The services that produce or consume ``event_type``: its producer, the push targets and
        pull consumers of the subscriptions whose filter lets it through."""
        spec = self.catalog.event_types.get(event_type)
        if spec is None:
            return set()
        users = {spec.producer}
        for name in self.catalog.matching_subscriptions(spec.topic, {"eventType": event_type}):
            users |= self.subscription_users(name)
        return users & set(self.catalog.services)

    def subscription_users(self, subscription: str) -> set[str]:
        sub = self.catalog.subscriptions.get(subscription)
        if sub is None:
            return set()
        delivery = sub.delivery
        user = getattr(delivery, "service", None) or getattr(delivery, "consumer", None)
        return {user} & set(self.catalog.services) if user else set()


def read_revision(repo: Repository, ref: str) -> Revision:
    """The deployables of ``ref``: its catalog (validated, with its Avro schemas), the import graph
    of its Python packages, its workflows and its Terraform environments."""
    files = repo.files(ref)
    python = [f for f in files if f.endswith(".py") and f.split("/", 1)[0] in PACKAGES]
    graph = ImportGraph(repo.read(ref, python))
    return Revision(
        catalog=catalog_at(repo, ref, files),
        graph=graph,
        workflows=tuple(
            sorted(
                f.removeprefix("workflows/").removesuffix(".yaml")
                for f in files
                if f.startswith("workflows/") and f.endswith(".yaml") and f.count("/") == 1
            )
        ),
        environments=tuple(
            sorted({f.split("/")[2] for f in files if f.startswith("terraform/environments/")})
        ),
    )


def catalog_at(repo: Repository, ref: str, files: list[str] | None = None) -> Catalog:
    """The catalog of ``ref``, validated as ``load_catalog`` validates the checkout's."""
    files = files if files is not None else repo.files(ref, SCHEMAS)
    texts = repo.read(ref, [f for f in files if f.startswith(SCHEMAS + "/")])
    if CATALOG not in texts:
        raise CatalogError(f"{ref}: no {CATALOG}")
    with tempfile.TemporaryDirectory(prefix="meridian-release-") as tmp:
        for path, text in texts.items():
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        try:
            return load_catalog(Path(tmp) / CATALOG)
        except CatalogError as e:
            raise CatalogError(str(e).replace(tmp + "/", f"{ref}:")) from None
