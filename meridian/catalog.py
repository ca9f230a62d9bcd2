"""Loads and validates ``schemas/catalog.yaml``, the event catalog.

The catalog names every topic, event type, subscription, service and Eventarc trigger of the
platform. Every error names the file and the entry (``schemas/catalog.yaml: subscriptions.billing:
…``) so a broken catalog is fixed in one read.

Dead letters are per consumer: subscription ``S`` dead-letters to a topic of its own, ``S.dlq``,
kept by exactly one subscription, ``S-dead-letters`` (``dead_letter_topic_of``,
``dead_letter_subscription_of``), so a consumer's dead letters are that subscription's backlog,
inspected, counted and replayed without anyone else's.

Stores (``stores:``) say which service owns which collections (``Catalog.stores``, ``ledgers``):
one database each on the embedded runtime, the owner's collections of the one Firestore database
on Google Cloud. ``meridian.documents.ownership`` enforces them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import fastavro
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from meridian import resources
from meridian.domain.errors import CatalogError
from meridian.filters import Filter, FilterSyntaxError, parse_filter

# The packaged catalog (meridian.resources): the repository's own file in a checkout.
DEFAULT_CATALOG = resources.catalog_file().resolve()

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_duration(value: object) -> float:
    """``"10s"``, ``"5m"``, ``"2h"``, ``"7d"`` (or a number of seconds) → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration like '10s', '5m', '2h' or '7d'")
    return float(match.group(1)) * _UNITS[match.group(2)]


def dead_letter_topic_of(subscription: str) -> str:
    """The name the catalog requires for ``subscription``'s own dead-letter topic."""
    return f"{subscription}.dlq"


def dead_letter_subscription_of(subscription: str) -> str:
    """The name the catalog requires for the one subscription keeping ``subscription``'s dead letters."""
    return f"{subscription}-dead-letters"


Seconds = Annotated[float, BeforeValidator(parse_duration)]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceSpec(_Entry):
    """A deployable unit. ``env`` is what this deployment of its package adds to the environment
    (one package may run as several services, each in its own role); ``part_of`` names the service
    it is a role of, started with it (``meridian up --services live-map`` starts the writer too).
    A ``worker`` serves no requests (an always-on pull consumer): it runs at least one instance
    with its CPU always allocated. ``sources`` are the paths it is built from beyond its package
    and what that imports (the release plan, meridian/release/, reads both): a file, or a
    directory ending in ``/``."""

    package: str
    kind: Literal["http", "push-reactor", "eventarc-target", "worker", "pipeline"]
    sources: tuple[str, ...] = ()
    ingress: Literal["public", "internal"] | None = None
    min_instances: int = Field(default=0, ge=0)
    env: dict[str, str] = Field(default_factory=dict)
    part_of: str | None = None


class TopicSpec(_Entry):
    description: str
    message_retention: Seconds = Field(default=7 * 86400, ge=600, le=31 * 86400)
    schema_: str | None = Field(default=None, alias="schema")


class EventTypeSpec(_Entry):
    schema_file: str = Field(alias="schema")
    version: int = Field(ge=1)
    description: str
    producer: str
    topic: str
    subject: str
    ordering_key: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class PushDelivery(_Entry):
    type: Literal["push"]
    service: str
    path: str = Field(default="/events", pattern=r"^/")


class PullDelivery(_Entry):
    type: Literal["pull"]
    consumer: str


class BigQueryDelivery(_Entry):
    type: Literal["bigquery"]
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
    write_metadata: bool = True


Delivery = Annotated[PushDelivery | PullDelivery | BigQueryDelivery, Field(discriminator="type")]


class RetrySpec(_Entry):
    minimum_backoff: Seconds = Field(default=10, ge=0, le=600)
    maximum_backoff: Seconds = Field(default=600, ge=0, le=600)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySpec:
        if self.minimum_backoff > self.maximum_backoff:
            raise ValueError("minimum_backoff must not exceed maximum_backoff")
        return self


class SubscriptionSpec(_Entry):
    topic: str
    filter: str = ""
    delivery: Delivery
    dead_letter_topic: str | None = None
    max_delivery_attempts: int | None = Field(default=None, ge=5, le=100)
    retry: RetrySpec | None = None
    ordering: bool = False
    ack_deadline_seconds: int = Field(default=10, ge=10, le=600)
    message_retention: Seconds = Field(default=7 * 86400, ge=600, le=31 * 86400)


FIRESTORE_EVENT_TYPES = frozenset(
    f"google.cloud.firestore.document.v1.{kind}"
    for kind in ("created", "updated", "deleted", "written")
)


class TriggerSpec(_Entry):
    document: str = Field(
        pattern=r"^[^/{}]+/\{[A-Za-z_][A-Za-z0-9_]*\}(/[^/{}]+/\{[A-Za-z_][A-Za-z0-9_]*\})*$"
    )
    event_type: str
    service: str
    path: str = Field(default="/", pattern=r"^/")

    @model_validator(mode="after")
    def _known_type(self) -> TriggerSpec:
        if self.event_type not in FIRESTORE_EVENT_TYPES:
            raise ValueError(
                f"event_type must be one of {', '.join(sorted(FIRESTORE_EVENT_TYPES))}"
            )
        return self


# The writer name of the embedded platform process (its Workflows engine); not a catalog service.
PLATFORM = "platform"
_COLLECTION_ID = r"^[A-Za-z_][A-Za-z0-9_-]*$"


class StoreSpec(_Entry):
    """Who owns which collections: ``writers`` are the owner (the store's name) and its roles;
    ``exceptions`` map another service that still writes the store to why (a debt, listed)."""

    collections: tuple[Annotated[str, Field(pattern=_COLLECTION_ID)], ...] = Field(min_length=1)
    writers: tuple[str, ...] = Field(min_length=1)
    exceptions: dict[str, str] = Field(default_factory=dict)

    @property
    def all_writers(self) -> tuple[str, ...]:
        return (*self.writers, *self.exceptions)


class JobSpec(_Entry):
    """A Cloud Run Job (``meridian job run NAME`` over the service image; locally the embedded
    Workflows engine runs the same command as a process): ``package`` holds its function
    (``JOBS``), ``timeout`` bounds its one task, ``schedule`` (cron, UTC) has Cloud Scheduler
    run it, and the platform's scheduler locally."""

    package: str
    description: str
    timeout: Seconds = Field(default=600, ge=1, le=86400)
    max_retries: int = Field(default=0, ge=0, le=10)
    schedule: str | None = None


class WorkflowTriggerSpec(_Entry):
    """An Eventarc trigger on a Pub/Sub topic whose destination is a workflow: each message
    starts an execution with the message's CloudEvent as its argument."""

    topic: str
    event_type: Literal["google.cloud.pubsub.topic.v1.messagePublished"] = (
        "google.cloud.pubsub.topic.v1.messagePublished"
    )
    workflow: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")


class _CatalogFile(_Entry):
    version: Literal[1]
    services: dict[str, ServiceSpec]
    topics: dict[str, TopicSpec]
    event_types: dict[str, EventTypeSpec]
    subscriptions: dict[str, SubscriptionSpec]
    triggers: dict[str, TriggerSpec] = Field(default_factory=dict)
    workflow_triggers: dict[str, WorkflowTriggerSpec] = Field(default_factory=dict)
    jobs: dict[str, JobSpec] = Field(default_factory=dict)
    # ``ledgers`` (a list) beside the stores (mappings): parsed by ``_stores``.
    stores: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    """The validated catalog, with the parsed Avro schema of every event type."""

    path: Path
    services: dict[str, ServiceSpec]
    topics: dict[str, TopicSpec]
    event_types: dict[str, EventTypeSpec]
    subscriptions: dict[str, SubscriptionSpec]
    triggers: dict[str, TriggerSpec]
    schemas: dict[str, dict[str, Any]]
    workflow_triggers: dict[str, WorkflowTriggerSpec] = field(default_factory=dict)
    jobs: dict[str, JobSpec] = field(default_factory=dict)
    stores: dict[str, StoreSpec] = field(default_factory=dict)
    # Collections every writer keeps in its own store (processed events, request keys).
    ledgers: tuple[str, ...] = ()

    def store_of(self, collection: str) -> str | None:
        """The store owning the top-level ``collection`` (None: a ledger, or undeclared)."""
        return self._owners.get(collection)

    def home_store(self, writer: str) -> str | None:
        """The store where ``writer`` (a service, or ``PLATFORM``) keeps its ledgers: the one it
        writes as owner or role, else the one it writes as an exception; None if it writes none."""
        for name, store in self.stores.items():
            if writer in store.writers:
                return name
        return next((n for n, s in self.stores.items() if writer in s.exceptions), None)

    def stores_written_by(self, writer: str) -> frozenset[str]:
        return frozenset(n for n, s in self.stores.items() if writer in s.all_writers)

    @cached_property
    def _owners(self) -> dict[str, str]:
        return {c: name for name, store in self.stores.items() for c in store.collections}

    @cached_property
    def filters(self) -> dict[str, Filter]:
        return {name: parse_filter(sub.filter) for name, sub in self.subscriptions.items()}

    def event_types_on(self, topic: str) -> list[str]:
        return [name for name, spec in self.event_types.items() if spec.topic == topic]

    def subscriptions_of(self, topic: str) -> list[str]:
        return [name for name, spec in self.subscriptions.items() if spec.topic == topic]

    def matching_subscriptions(self, topic: str, attributes: Mapping[str, str]) -> list[str]:
        """The subscriptions of ``topic`` whose filter accepts a message with ``attributes``."""
        return [
            name for name in self.subscriptions_of(topic) if self.filters[name].matches(attributes)
        ]

    def dead_letters_of(self, subscription: str) -> str:
        """The subscription that keeps ``subscription``'s dead letters (validated: exactly one).

        Raises CatalogError when ``subscription`` is unknown or has no dead-letter policy."""
        spec = self.subscriptions.get(subscription)
        if spec is None:
            known = ", ".join(n for n, s in self.subscriptions.items() if s.dead_letter_topic)
            raise CatalogError(f"no subscription {subscription!r} in {self.path} (one of: {known})")
        if spec.dead_letter_topic is None:
            raise CatalogError(f"subscription {subscription!r} has no dead-letter topic")
        (holder,) = self.subscriptions_of(spec.dead_letter_topic)
        return holder

    def schema_path(self, event_type: str) -> Path:
        return self.path.parent / self.event_types[event_type].schema_file


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Read and validate the catalog; raises CatalogError naming the file and the entry."""
    path = Path(path) if path else DEFAULT_CATALOG
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such catalog file") from None
    except yaml.YAMLError as e:
        raise CatalogError(f"{path}: not valid YAML: {e}") from None
    try:
        parsed = _CatalogFile.model_validate(raw)
    except PydanticValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if not str(p).endswith('Delivery'))}: {err['msg']}"
            for err in e.errors()
        )
        raise CatalogError(f"{path}: {problems}") from None
    schemas = {name: _load_schema(path, name, spec) for name, spec in parsed.event_types.items()}
    catalog = Catalog(
        path=path,
        services=parsed.services,
        topics=parsed.topics,
        event_types=parsed.event_types,
        subscriptions=parsed.subscriptions,
        triggers=parsed.triggers,
        workflow_triggers=parsed.workflow_triggers,
        jobs=parsed.jobs,
        schemas=schemas,
    )
    _check_references(catalog)
    stores = _stores(path, parsed.stores, parsed.services, frozenset(parsed.jobs))
    return dataclasses.replace(catalog, **stores)


def _stores(
    path: Path, raw: dict[str, Any], services: Mapping[str, ServiceSpec], jobs: frozenset[str]
) -> dict[str, Any]:
    """``stores`` and ``ledgers`` from the ``stores:`` section, checked: each collection in one
    store, each writer a known service, job (or the platform) with one home store, each store
    named after its owner, whose other writers are its roles (a service ``part_of`` it, or a
    job: one function run over the owner's handlers) or named exceptions."""

    def fail(entry: str, problem: str) -> NoReturn:
        raise CatalogError(f"{path}: stores.{entry}: {problem}")

    raw = dict(raw)
    ledgers = raw.pop("ledgers", [])
    if not isinstance(ledgers, list) or not all(isinstance(c, str) for c in ledgers):
        fail("ledgers", "must be a list of collection names")
    stores: dict[str, StoreSpec] = {}
    for name, entry in raw.items():
        try:
            stores[name] = StoreSpec.model_validate(entry)
        except PydanticValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            fail(name, problems)
    known = {*services, *jobs, PLATFORM}
    owners: dict[str, str] = {}
    homes: dict[str, str] = {}
    for name, store in stores.items():
        if name not in known:
            fail(name, f"a store is named after its owning service; {name!r} is not a service")
        if store.writers[0] != name:
            fail(f"{name}.writers", f"the first writer is the owner, {name!r}")
        for collection in store.collections:
            if collection in ledgers:
                fail(f"{name}.collections", f"{collection!r} is a ledger, kept in every store")
            if collection in owners:
                fail(
                    f"{name}.collections", f"{collection!r} is also in stores.{owners[collection]}"
                )
            owners[collection] = name
        for writer in store.all_writers:
            if writer not in known:
                fail(
                    f"{name}.writers", f"{writer!r} is not a known service or job (or {PLATFORM!r})"
                )
        for writer in store.writers:
            if writer in homes:
                fail(f"{name}.writers", f"{writer!r} is a writer of stores.{homes[writer]} too")
            homes[writer] = name
        for role in store.writers[1:]:
            if role not in jobs and (role not in services or services[role].part_of != name):
                fail(
                    f"{name}.writers",
                    f"{role!r} is not a role of {name!r} (part_of) nor a job: name it under exceptions "
                    "with the reason it writes here",
                )
        for writer in store.exceptions:
            if writer in store.writers:
                fail(f"{name}.exceptions", f"{writer!r} is a writer already")
    for name, store in stores.items():
        for writer in store.exceptions:
            others = [n for n, s in stores.items() if writer in s.exceptions]
            if writer not in homes and len(others) > 1:
                fail(
                    f"{name}.exceptions",
                    f"{writer!r} writes no store of its own and is an exception of "
                    f"{', '.join(others)}: its ledgers need one home",
                )
    return {"stores": stores, "ledgers": tuple(ledgers)}


def _load_schema(catalog_path: Path, name: str, spec: EventTypeSpec) -> dict[str, Any]:
    file = catalog_path.parent / spec.schema_file
    where = f"{catalog_path}: event_types.{name}: schema {file}"
    try:
        schema = json.loads(file.read_text())
        parsed = fastavro.parse_schema(schema)
    except FileNotFoundError:
        raise CatalogError(f"{where} does not exist") from None
    except json.JSONDecodeError as e:
        raise CatalogError(f"{where} is not valid JSON: {e}") from None
    except Exception as e:  # fastavro raises several unrelated types for a bad schema
        raise CatalogError(f"{where} is not a valid Avro schema: {e}") from None
    if schema.get("type") != "record" or schema.get("name") != name:
        raise CatalogError(f"{where} must be a record named {name!r}")
    fields = {f["name"] for f in schema["fields"]}
    used = [spec.subject, spec.ordering_key, *spec.attributes.values()]
    for name_used in (f for f in used if f):
        if name_used not in fields:
            raise CatalogError(
                f"{catalog_path}: event_types.{name}: field {name_used!r} is not in {file}"
            )
    assert isinstance(parsed, dict)  # a record schema parses to a dict
    return parsed


def _check_references(catalog: Catalog) -> None:
    where = str(catalog.path)

    def fail(entry: str, problem: str) -> NoReturn:
        raise CatalogError(f"{where}: {entry}: {problem}")

    dead_letter_topics = {s.dead_letter_topic for s in catalog.subscriptions.values()}
    _check_dead_letters(catalog, fail)
    for name, topic in catalog.topics.items():
        if topic.schema_ and catalog.event_types.get(topic.schema_, None) is None:
            fail(f"topics.{name}", f"schema names unknown event type {topic.schema_!r}")
    for name, spec in catalog.event_types.items():
        if spec.producer not in catalog.services:
            fail(f"event_types.{name}", f"producer {spec.producer!r} is not a known service")
        if spec.topic not in catalog.topics:
            fail(f"event_types.{name}", f"topic {spec.topic!r} is not a known topic")
    for name, sub in catalog.subscriptions.items():
        entry = f"subscriptions.{name}"
        if sub.topic not in catalog.topics:
            fail(entry, f"topic {sub.topic!r} is not a known topic")
        if sub.dead_letter_topic is None and sub.topic not in dead_letter_topics:
            fail(
                entry,
                "every subscription needs a dead_letter_topic (poison messages must not loop)",
            )
        if isinstance(sub.delivery, PushDelivery):
            target = catalog.services.get(sub.delivery.service)
            if target is None:
                fail(entry, f"push target {sub.delivery.service!r} is not a known service")
            elif target.kind not in ("push-reactor", "http"):
                fail(
                    entry,
                    f"push target {sub.delivery.service!r} is a {target.kind}, not an HTTP service",
                )
        try:
            parsed = parse_filter(sub.filter)
        except FilterSyntaxError as e:
            fail(f"{entry}.filter", str(e))
        on_topic = catalog.event_types_on(sub.topic)
        for event_type in sorted(parsed.equality_values("eventType")):
            if event_type not in on_topic:
                fail(
                    f"{entry}.filter", f"event type {event_type!r} is not published on {sub.topic}"
                )
        for prefix in sorted(parsed.prefix_values("eventType")):
            if not any(t.startswith(prefix) for t in on_topic):
                fail(f"{entry}.filter", f"no event type on {sub.topic} starts with {prefix!r}")
    for name, service in catalog.services.items():
        entry = f"services.{name}"
        if service.kind == "worker" and service.min_instances < 1:
            fail(entry, "a worker serves no requests to start it: it needs min_instances >= 1")
        if service.part_of is not None:
            whole = catalog.services.get(service.part_of)
            if whole is None:
                fail(entry, f"part_of {service.part_of!r} is not a known service")
            elif whole.package != service.package or whole.part_of is not None:
                fail(entry, f"part_of {service.part_of!r} must be a service of the same package")
    for name, trigger in catalog.triggers.items():
        if trigger.service not in catalog.services:
            fail(f"triggers.{name}", f"service {trigger.service!r} is not a known service")
    for name, wt in catalog.workflow_triggers.items():
        if wt.topic not in catalog.topics:
            fail(f"workflow_triggers.{name}", f"topic {wt.topic!r} is not a known topic")
        if not (resources.workflows_directory() / f"{wt.workflow}.yaml").is_file():
            fail(
                f"workflow_triggers.{name}",
                f"workflow {wt.workflow!r} has no {wt.workflow}.yaml in workflows/",
            )
    for name in catalog.jobs:
        if name in catalog.services:
            fail(f"jobs.{name}", "a job and a service cannot share a name (Cloud Run's names)")


def _check_dead_letters(catalog: Catalog, fail: Callable[[str, str], NoReturn]) -> None:
    """Each subscription dead-letters to its own topic, named by the rule, which exactly one
    subscription, named by the rule, keeps; no event type is published on a dead-letter topic."""
    users: dict[str, list[str]] = {}
    for name, sub in catalog.subscriptions.items():
        if sub.dead_letter_topic is not None:
            users.setdefault(sub.dead_letter_topic, []).append(name)
    for name, sub in catalog.subscriptions.items():
        topic = sub.dead_letter_topic
        if topic is None:
            continue
        entry = f"subscriptions.{name}"
        if topic not in catalog.topics:
            fail(entry, f"dead_letter_topic {topic!r} is not a known topic")
        if topic == sub.topic:
            fail(entry, "dead_letter_topic must differ from the subscription's topic")
        if len(users[topic]) > 1:
            others = ", ".join(f"subscriptions.{n}" for n in users[topic] if n != name)
            fail(
                entry,
                f"dead_letter_topic {topic!r} is also the dead_letter_topic of {others}: each "
                f"subscription dead-letters to a topic of its own ({dead_letter_topic_of(name)!r})",
            )
        if topic != dead_letter_topic_of(name):
            fail(entry, f"dead_letter_topic {topic!r} must be named {dead_letter_topic_of(name)!r}")
        holders = catalog.subscriptions_of(topic)
        wanted = dead_letter_subscription_of(name)
        if not holders:
            fail(
                entry,
                f"no subscription keeps the dead letters of {topic!r} (a topic without one drops "
                f"them): add subscriptions.{wanted} with topic {topic}",
            )
        if len(holders) > 1:
            fail(
                entry,
                f"dead-letter topic {topic!r} is kept by {len(holders)} subscriptions "
                f"({', '.join(holders)}); exactly one, {wanted!r}, may hold it",
            )
        if holders != [wanted]:
            fail(
                f"subscriptions.{holders[0]}",
                f"keeps the dead letters of subscriptions.{name}: it must be named {wanted!r}",
            )
        holder = catalog.subscriptions[wanted]
        if holder.dead_letter_topic is not None:
            fail(f"subscriptions.{wanted}", "a dead-letter subscription has no dead_letter_topic")
        for event_type in catalog.event_types_on(topic):
            fail(f"event_types.{event_type}", f"topic {topic!r} is a dead-letter topic")
