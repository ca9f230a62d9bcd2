"""Runtime settings: the one place the environment is read (every CLI flag has its variable).

``Settings.from_env()`` reads every variable once, at start, into typed fields with their
defaults; code takes what it needs from the ``Settings`` its entrypoint built and passed down,
never from ``os.environ``. In tests, ``Settings(...)`` is built with keyword arguments instead.
Values only production needs (provider URLs, secret names, the bucket) are checked where an
adapter needs them (``Settings.required``): a missing one fails the service's start naming the
variable, not a request later with a KeyError. ``tests/unit/test_config.py`` fails on any
environment read outside this module.

``VARIABLES`` lists what ``from_env`` reads, with defaults and meanings: docs/configuration.md is
generated from it (``python -m meridian.config --markdown``), and a test fails when the table and
the reads disagree.

A service's own options (the live map's ``LIVE_MAP_*``) stay with the service, built from the
same mapping its entrypoint passes here (``environment()``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Backend = Literal["embedded", "gcp"]

# Fixed offsets from MERIDIAN_BASE_PORT, so a service keeps its port as others are added.
PORT_OFFSETS: dict[str, int] = {
    "platform": 0,
    "command": 1,
    "event-publisher": 2,
    "eta": 3,
    "notification": 4,
    "billing": 5,
    "pod": 6,
    "client-webhook": 7,
    "driver-scoring": 8,
    "live-map": 9,
    "dispatch": 10,
    "sms-gateway": 11,
    "billing-api": 12,
    "live-map-writer": 13,
    "legacy-writer": 14,
    "pubsub-grpc": 20,
}

_PORT_OVERRIDE = re.compile(r"MERIDIAN_PORT_(\w+)")
_WORKFLOW = re.compile(r"MERIDIAN_(\w+)_WORKFLOW")


# Where spans may go (``Observability.trace_export``; ``meridian.observability``).
TRACE_EXPORTS = ("", "none", "console", "cloud-trace")


# What each deployed service reads on the gcp backend, besides GCP_ENV_EVERY_SERVICE: terraform/
# sets exactly these for it, and nothing else (tests/policy/test_terraform_env_parity.py checks both
# ways, and that ``from_env`` or the service's own options read each). Cloud Run's own (PORT,
# K_SERVICE) are not listed: the platform sets them. The identities are the service accounts whose
# tokens a service accepts; GCP_SECRET_ENV are put in the environment by Cloud Run from Secret
# Manager (the secret's value, never through Terraform).
GCP_ENV_EVERY_SERVICE = ("GOOGLE_CLOUD_PROJECT", "MERIDIAN_BACKEND")
_PUSHED = ("MERIDIAN_PUSH_IDENTITY",)  # a push reactor: Pub/Sub's push identity calls it
GCP_SERVICE_ENV: dict[str, tuple[str, ...]] = {
    "command": (
        "MERIDIAN_DISPATCH_WORKFLOW",
        "MERIDIAN_IDENTITY_TENANTS",
        "MERIDIAN_POD_BUCKET",
        # the scheduler fires the dispatch schedules; public, so its token is verified here
        "MERIDIAN_PUSH_CERTS_URL",
        "MERIDIAN_SCHEDULER_IDENTITY",
    ),
    "event-publisher": ("MERIDIAN_EVENTARC_IDENTITY",),
    "eta": (*_PUSHED, "MERIDIAN_ROUTES_API_KEY", "MERIDIAN_SCHEDULER_IDENTITY"),
    "notification": (
        *_PUSHED,
        "MERIDIAN_SMS_API_KEY",
        "MERIDIAN_SMS_URL",
        "MERIDIAN_TRACKING_BASE_URL",
        "MERIDIAN_TRACKING_SECRET",
    ),
    "billing": (*_PUSHED, "MERIDIAN_BILLING_API_KEY", "MERIDIAN_BILLING_URL"),
    "pod": (*_PUSHED, "MERIDIAN_POD_BUCKET"),
    "client-webhook": _PUSHED,
    "driver-scoring": _PUSHED,
    # The live map's role comes from the catalog's env (services.live_map.bootstrap.MapOptions).
    "live-map": ("LIVE_MAP_ROLE", "MERIDIAN_IDENTITY_TENANTS", "MERIDIAN_TRACKING_SECRET"),
    "live-map-writer": ("LIVE_MAP_ROLE", "MERIDIAN_TRACKING_SECRET"),
    "dispatch": ("MERIDIAN_WORKFLOW_IDENTITY",),  # the dispatch saga calls its steps
    # The migration bridge's push direction: the monolith's Cloud SQL by private IP, its password
    # read from Secret Manager by name (services/sync/legacy.py).
    "legacy-writer": (
        *_PUSHED,
        "MERIDIAN_LEGACY_DATABASE",
        "MERIDIAN_LEGACY_HOST",
        "MERIDIAN_LEGACY_PASSWORD_SECRET",
        "MERIDIAN_LEGACY_USER",
    ),
}
GCP_SECRET_ENV = frozenset(
    {
        "MERIDIAN_BILLING_API_KEY",
        "MERIDIAN_ROUTES_API_KEY",
        "MERIDIAN_SMS_API_KEY",
        "MERIDIAN_TRACKING_SECRET",
    }
)


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""


def environment() -> Mapping[str, str]:
    """The process environment, for ``Settings.from_env`` and a service's own options."""
    return os.environ


def add_to_environment(values: Mapping[str, str]) -> None:
    """Set ``values`` in the process environment, before the entrypoint that reads it runs
    (``meridian serve``: what the catalog adds for a service, such as its role)."""
    os.environ.update(values)


@dataclass(frozen=True)
class Observability:
    """Logs and traces (``meridian.observability``)."""

    log_level: str = "INFO"  # MERIDIAN_LOG_LEVEL
    # uvicorn's own lines (start-up, errors) follow MERIDIAN_LOG_LEVEL when it is set; unset,
    # they stay at warnings so a service's log is its own JSON lines.
    server_log_level: str = "warning"
    # MERIDIAN_TRACE_EXPORT: where spans go (``TRACE_EXPORTS``): "cloud-trace" (the default on
    # the gcp backend), "console" (stderr), or "" / "none" for no exporter (the embedded default).
    trace_export: str = ""
    trace_sample_ratio: float = 1.0  # MERIDIAN_TRACE_SAMPLE_RATIO of new traces


@dataclass(frozen=True)
class Providers:
    """The production side's external systems (the ``gcp`` backend; embedded, the local
    stand-ins are found by port). Empty means not set: ``Settings.required`` names the
    variable of one an adapter needs."""

    sms_url: str = ""  # MERIDIAN_SMS_URL
    sms_api_key_secret: str = ""  # MERIDIAN_SMS_API_KEY_SECRET (a Secret Manager secret)
    billing_url: str = ""  # MERIDIAN_BILLING_URL
    billing_api_key_secret: str = ""  # MERIDIAN_BILLING_API_KEY_SECRET
    routes_api_key_secret: str = ""  # MERIDIAN_ROUTES_API_KEY_SECRET
    # MERIDIAN_SMS_API_KEY, MERIDIAN_BILLING_API_KEY, MERIDIAN_ROUTES_API_KEY: the key itself, as
    # Cloud Run puts a Secret Manager secret in the environment; when set, the secret named by
    # the *_SECRET variable is not read (``meridian.adapters``).
    sms_api_key: str = ""
    billing_api_key: str = ""
    routes_api_key: str = ""
    pod_bucket: str = ""  # MERIDIAN_POD_BUCKET
    tracking_secret: str = ""  # MERIDIAN_TRACKING_SECRET (signs customers' tracking tokens)
    # MERIDIAN_<NAME>_WORKFLOW=projects/P/locations/L/workflows/W (set by Terraform): the Cloud
    # Workflows workflow of each name ("dispatch"), keyed in lower case with dashes.
    workflows: Mapping[str, str] = field(default_factory=dict)


# Each required field's variable, for the error that names it.
_PROVIDER_VARIABLES = {
    "sms_url": "MERIDIAN_SMS_URL",
    "sms_api_key_secret": "MERIDIAN_SMS_API_KEY_SECRET",
    "billing_url": "MERIDIAN_BILLING_URL",
    "billing_api_key_secret": "MERIDIAN_BILLING_API_KEY_SECRET",
    "routes_api_key_secret": "MERIDIAN_ROUTES_API_KEY_SECRET",
    "pod_bucket": "MERIDIAN_POD_BUCKET",
    "tracking_secret": "MERIDIAN_TRACKING_SECRET",
}
# Provider keys given by value (no Settings.required: the *_SECRET variable is the fallback).
_PROVIDER_KEYS = {
    "sms_api_key": "MERIDIAN_SMS_API_KEY",
    "billing_api_key": "MERIDIAN_BILLING_API_KEY",
    "routes_api_key": "MERIDIAN_ROUTES_API_KEY",
}

# Where Identity Platform publishes the keys that sign its ID tokens (x509 certificates).
IDENTITY_PLATFORM_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)


@dataclass(frozen=True)
class Faults:
    """Latency and failures an embedded provider stand-in injects from its start."""

    latency_s: float = 0.0  # <PREFIX>_LATENCY_S
    failure_rate: float = 0.0  # <PREFIX>_FAILURE_RATE


@dataclass(frozen=True)
class Embedded:
    """The embedded runtime's timings (the platform process and ``meridian up``)."""

    start_timeout_s: float = 90.0  # MERIDIAN_START_TIMEOUT: every service healthy within
    ttl_sweep_s: float = 60.0  # MERIDIAN_TTL_SWEEP_S: expired documents deleted this often
    workflows_dir: Path | None = None  # MERIDIAN_WORKFLOWS_DIR; None: the packaged workflows/
    eventarc_min_backoff_s: float = 10.0  # MERIDIAN_EVENTARC_MIN_BACKOFF (Eventarc's own values)
    eventarc_max_backoff_s: float = 600.0  # MERIDIAN_EVENTARC_MAX_BACKOFF
    sla_tick_s: float = 30.0  # MERIDIAN_SLA_TICK_S: the ETA reactor's SLA check this often
    schedule_fire_s: float = 60.0  # MERIDIAN_SCHEDULE_FIRE_S: dispatch schedules fired this often
    sync_pull_s: float = 60.0  # MERIDIAN_SYNC_PULL_S: the sync-pull job run this often
    sync_ready_timeout_s: float = 120.0  # MERIDIAN_SYNC_READY_TIMEOUT_S: sync.yaml's ready wait
    sms_faults: Faults = Faults()  # MERIDIAN_SMS_LATENCY_S, MERIDIAN_SMS_FAILURE_RATE
    billing_faults: Faults = Faults()  # MERIDIAN_BILLING_LATENCY_S, MERIDIAN_BILLING_FAILURE_RATE


@dataclass(frozen=True)
class Legacy:
    """The legacy monolith's PostgreSQL, which the migration bridge (``services/sync``) keeps in
    step with Meridian. ``services.sync.legacy`` opens its connections from these."""

    # MERIDIAN_LEGACY_DSN: a libpq connection string ("host=... dbname=... user=..."); when set,
    # it is used as is (the embedded runtime, tests) and the fields below are not read.
    dsn: str = ""
    # On Google Cloud: the Cloud SQL instance's private IP, its database and the bridge's user;
    # the password is the secret MERIDIAN_LEGACY_PASSWORD_SECRET names (or MERIDIAN_LEGACY_PASSWORD,
    # the value itself, as Cloud Run puts a secret in the environment).
    host: str = ""  # MERIDIAN_LEGACY_HOST
    port: int = 5432  # MERIDIAN_LEGACY_PORT
    database: str = "monolith"  # MERIDIAN_LEGACY_DATABASE
    user: str = "meridian-bridge"  # MERIDIAN_LEGACY_USER
    password_secret: str = ""  # MERIDIAN_LEGACY_PASSWORD_SECRET
    password: str = ""  # MERIDIAN_LEGACY_PASSWORD
    page_size: int = 500  # MERIDIAN_SYNC_PAGE_SIZE: rows per SyncRequested page
    # MERIDIAN_SYNC_IN_FLIGHT_S: a record changed on either side this recently may still be on
    # its way across; reconciliation does not count it as a difference (services/sync/reconcile).
    in_flight_s: float = 300.0


@dataclass(frozen=True)
class Settings:
    backend: Backend = "embedded"
    data_dir: Path = Path(".meridian")
    # MERIDIAN_HOST: the address services bind to; unset, loopback, except on Cloud Run
    # (``cloud_run_service``), whose port check reaches the container from outside: 0.0.0.0.
    host: str = "127.0.0.1"
    # K_SERVICE, which Cloud Run sets in every container it runs: the service's name there.
    cloud_run_service: str = ""
    base_port: int = 8700
    # PORT (Cloud Run's, and the supervisor's for each child): where this process listens;
    # None: its service's port (``port_of``).
    port: int | None = None
    # MERIDIAN_PORT_<SERVICE>: one service's port instead of base plus offset, keyed by service.
    port_overrides: Mapping[str, int] = field(default_factory=dict)
    project: str = "meridian-local"
    # The platform identities (service accounts) that sign push, Eventarc, Cloud Scheduler and
    # Workflows (the dispatch saga calling its steps) tokens: the embedded platform signs as them,
    # and each endpoint accepts only the one that calls it. Empty means the name terraform/ gives
    # it in ``project`` (see __post_init__).
    push_identity: str = ""
    eventarc_identity: str = ""
    scheduler_identity: str = ""
    workflow_identity: str = ""
    # MERIDIAN_PUSH_CERTS_URL: where the keys signing those tokens are published (a JWKS, as
    # Google's https://www.googleapis.com/oauth2/v3/certs). Empty (Cloud Run): IAM verified the
    # token before the request arrived and strips its signature (reference §3.5), so the
    # service reads its claims only. Set: each endpoint verifies signature, audience, issuer
    # and expiry itself against these keys (a service no IAM check fronts; tests/e2e_gcp).
    push_certs_url: str = ""
    # MERIDIAN_IDENTITY_CERTS_URL: the keys signing Identity Platform's ID tokens (drivers,
    # dispatchers); Google's own unless set.
    identity_certs_url: str = IDENTITY_PLATFORM_CERTS_URL
    # MERIDIAN_TRACKING_BASE_URL: where customers open the live map from a tracking link;
    # empty means the live map's own URL.
    tracking_base_url: str = ""
    # MERIDIAN_IDENTITY_TENANTS: the Identity Platform tenants (comma-separated ids) whose users
    # may sign in (drivers, customers); empty, only users of no tenant (``meridian.gcp.identity``).
    identity_tenants: tuple[str, ...] = ()
    # MERIDIAN_WEBHOOK_ALLOW_NETWORKS: CIDRs or host names (comma-separated) client webhook
    # endpoints may resolve to although internal (``meridian.app.webhooks.AllowList.parse``).
    webhook_allow_networks: str = ""
    # MERIDIAN_TELEMETRY_MAX_SKEW_S, MERIDIAN_TELEMETRY_MAX_AGE_S: how far ahead of the command
    # service's clock, and how far behind it, a ping's recorded_at may be
    # (``meridian.domain.telemetry.PingWindow`` says why these defaults).
    telemetry_max_skew_s: float = 300.0
    telemetry_max_age_s: float = 86400.0
    observability: Observability = Observability()
    providers: Providers = Providers()
    embedded: Embedded = Embedded()
    legacy: Legacy = Legacy()

    def __post_init__(self) -> None:
        defaults = {
            "push_identity": "pubsub-push",
            "eventarc_identity": "eventarc-trigger",
            "scheduler_identity": "scheduler",
            "workflow_identity": "dispatch-wf",
        }
        for name, account in defaults.items():
            if not getattr(self, name):
                email = f"{account}@{self.project}.iam.gserviceaccount.com"
                object.__setattr__(self, name, email)  # frozen: set once, while being built

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every variable Meridian reads, from ``environ`` (the process environment if None)."""
        env = environment() if environ is None else environ
        backend = env.get("MERIDIAN_BACKEND", "embedded")
        if backend not in ("embedded", "gcp"):
            raise ConfigError(f"MERIDIAN_BACKEND must be 'embedded' or 'gcp', not {backend!r}")
        read = _Reader(env)
        log_level = env.get("MERIDIAN_LOG_LEVEL")
        return cls(
            backend=backend,  # type: ignore[arg-type]  # checked just above
            data_dir=Path(env.get("MERIDIAN_DATA_DIR", ".meridian")),
            host=env.get("MERIDIAN_HOST") or ("0.0.0.0" if env.get("K_SERVICE") else "127.0.0.1"),
            cloud_run_service=env.get("K_SERVICE", ""),
            base_port=read.integer("MERIDIAN_BASE_PORT", 8700),
            port=read.optional_integer("PORT"),
            port_overrides={
                _service_name(m[1]): read.integer(m[0], 0)
                for m in map(_PORT_OVERRIDE.fullmatch, env)
                if m and env[m[0]]
            },
            project=env.get("GOOGLE_CLOUD_PROJECT", "meridian-local"),
            push_identity=env.get("MERIDIAN_PUSH_IDENTITY", ""),
            eventarc_identity=env.get("MERIDIAN_EVENTARC_IDENTITY", ""),
            scheduler_identity=env.get("MERIDIAN_SCHEDULER_IDENTITY", ""),
            push_certs_url=env.get("MERIDIAN_PUSH_CERTS_URL", ""),
            identity_certs_url=env.get("MERIDIAN_IDENTITY_CERTS_URL")
            or IDENTITY_PLATFORM_CERTS_URL,
            workflow_identity=env.get("MERIDIAN_WORKFLOW_IDENTITY", ""),
            tracking_base_url=env.get("MERIDIAN_TRACKING_BASE_URL", ""),
            identity_tenants=tuple(
                t.strip() for t in env.get("MERIDIAN_IDENTITY_TENANTS", "").split(",") if t.strip()
            ),
            webhook_allow_networks=env.get("MERIDIAN_WEBHOOK_ALLOW_NETWORKS", ""),
            telemetry_max_skew_s=read.number("MERIDIAN_TELEMETRY_MAX_SKEW_S", 300.0),
            telemetry_max_age_s=read.number("MERIDIAN_TELEMETRY_MAX_AGE_S", 86400.0),
            observability=Observability(
                log_level=(log_level or "INFO").upper(),
                server_log_level=(log_level or "warning").lower(),
                trace_export=read.choice(
                    "MERIDIAN_TRACE_EXPORT",
                    TRACE_EXPORTS,
                    "cloud-trace" if backend == "gcp" else "",
                ),
                trace_sample_ratio=read.number("MERIDIAN_TRACE_SAMPLE_RATIO", 1.0),
            ),
            providers=Providers(
                **{name: env.get(variable, "") for name, variable in _PROVIDER_VARIABLES.items()},
                **{name: env.get(variable, "") for name, variable in _PROVIDER_KEYS.items()},
                workflows={
                    _service_name(m[1]): env[m[0]] for m in map(_WORKFLOW.fullmatch, env) if m
                },
            ),
            embedded=Embedded(
                start_timeout_s=read.number("MERIDIAN_START_TIMEOUT", 90.0),
                ttl_sweep_s=read.number("MERIDIAN_TTL_SWEEP_S", 60.0),
                workflows_dir=Path(env["MERIDIAN_WORKFLOWS_DIR"])
                if env.get("MERIDIAN_WORKFLOWS_DIR")
                else None,
                eventarc_min_backoff_s=read.number("MERIDIAN_EVENTARC_MIN_BACKOFF", 10.0),
                eventarc_max_backoff_s=read.number("MERIDIAN_EVENTARC_MAX_BACKOFF", 600.0),
                sla_tick_s=read.number("MERIDIAN_SLA_TICK_S", 30.0),
                schedule_fire_s=read.number("MERIDIAN_SCHEDULE_FIRE_S", 60.0),
                sync_pull_s=read.number("MERIDIAN_SYNC_PULL_S", 60.0),
                sync_ready_timeout_s=read.number("MERIDIAN_SYNC_READY_TIMEOUT_S", 120.0),
                sms_faults=read.faults("MERIDIAN_SMS"),
                billing_faults=read.faults("MERIDIAN_BILLING"),
            ),
            legacy=Legacy(
                dsn=env.get("MERIDIAN_LEGACY_DSN", ""),
                host=env.get("MERIDIAN_LEGACY_HOST", ""),
                port=read.integer("MERIDIAN_LEGACY_PORT", 5432),
                database=env.get("MERIDIAN_LEGACY_DATABASE") or "monolith",
                user=env.get("MERIDIAN_LEGACY_USER") or "meridian-bridge",
                password_secret=env.get("MERIDIAN_LEGACY_PASSWORD_SECRET", ""),
                password=env.get("MERIDIAN_LEGACY_PASSWORD", ""),
                page_size=read.integer("MERIDIAN_SYNC_PAGE_SIZE", 500),
                in_flight_s=read.number("MERIDIAN_SYNC_IN_FLIGHT_S", 300.0),
            ),
        )

    @staticmethod
    def required_env(service: str, backend: Backend = "gcp") -> frozenset[str]:
        """The variables ``service`` must be given on ``backend`` (``GCP_SERVICE_ENV``); the
        embedded runtime needs none (``meridian up`` derives everything)."""
        if backend != "gcp":
            return frozenset()
        return frozenset(GCP_ENV_EVERY_SERVICE + GCP_SERVICE_ENV[service])

    def required(self, provider_field: str) -> str:
        """The value of a ``Providers`` field the chosen adapter needs; ConfigError naming its
        variable if it is not set."""
        value = getattr(self.providers, provider_field)
        if not value:
            variable = _PROVIDER_VARIABLES[provider_field]
            raise ConfigError(f"{variable} must be set when MERIDIAN_BACKEND={self.backend}")
        return str(value)

    def workflow(self, name: str) -> str:
        """The Cloud Workflows resource of workflow ``name``; ConfigError naming its variable
        if it is not set."""
        if name not in self.providers.workflows:
            variable = f"MERIDIAN_{name.upper().replace('-', '_')}_WORKFLOW"
            raise ConfigError(f"{variable} must be set when MERIDIAN_BACKEND={self.backend}")
        return self.providers.workflows[name]

    def port_of(self, service: str) -> int:
        """The service's port: MERIDIAN_PORT_<NAME> if set, else the base port plus its offset."""
        if service in self.port_overrides:
            return self.port_overrides[service]
        if service not in PORT_OFFSETS:
            raise KeyError(f"no port assigned to service {service!r}; add it to PORT_OFFSETS")
        return self.base_port + PORT_OFFSETS[service]

    def url_of(self, service: str) -> str:
        return f"http://{self.host}:{self.port_of(service)}"


@dataclass(frozen=True)
class Variable:
    """One variable ``Settings.from_env`` reads: its name (``<...>`` stands for a family, as
    ``MERIDIAN_PORT_<SERVICE>``), its default as a person would set it, and what it means."""

    name: str
    default: str
    meaning: str


# Every variable ``Settings.from_env`` reads, in the order a reader meets them; docs/configuration.md
# is generated from it (``python -m meridian.config --markdown``), and
# tests/unit/test_docs_examples.py fails when the reads and this table disagree.
_GCP = "with `gcp`: "
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "MERIDIAN_BACKEND",
        "`embedded`",
        "`embedded` (local adapters) or `gcp` (Google clients)",
    ),
    Variable(
        "MERIDIAN_DATA_DIR",
        "`.meridian`",
        "where the embedded runtime keeps its state (SQLite, Parquet, keys, logs)",
    ),
    Variable(
        "MERIDIAN_HOST",
        "`127.0.0.1`; `0.0.0.0` on Cloud Run",
        "the address services bind to",
    ),
    Variable(
        "K_SERVICE",
        "",
        "set by Cloud Run: the service runs there, so it binds `0.0.0.0` unless "
        "`MERIDIAN_HOST` says otherwise",
    ),
    Variable(
        "MERIDIAN_BASE_PORT",
        "`8700`",
        "the first port; each service has a fixed offset from it (`PORT_OFFSETS`)",
    ),
    Variable(
        "PORT",
        "the service's port",
        "where this process listens (Cloud Run sets it; `meridian up` sets it for each child)",
    ),
    Variable(
        "MERIDIAN_PORT_<SERVICE>",
        "",
        "one service's port instead of base plus offset, e.g. `MERIDIAN_PORT_COMMAND=9000`",
    ),
    Variable(
        "GOOGLE_CLOUD_PROJECT",
        "`meridian-local`",
        "the project: in trace ids, in the default identities and, with `gcp`, for the clients",
    ),
    Variable(
        "MERIDIAN_PUSH_IDENTITY",
        "`pubsub-push@<project>.iam.gserviceaccount.com`",
        "the service account whose token Pub/Sub push requests carry (reactors accept only it)",
    ),
    Variable(
        "MERIDIAN_EVENTARC_IDENTITY",
        "`eventarc-trigger@<project>.iam.gserviceaccount.com`",
        "the service account of Eventarc's calls to the event publisher",
    ),
    Variable(
        "MERIDIAN_SCHEDULER_IDENTITY",
        "`scheduler@<project>.iam.gserviceaccount.com`",
        "the service account of Cloud Scheduler's calls (the ETA reactor's SLA check)",
    ),
    Variable(
        "MERIDIAN_WORKFLOW_IDENTITY",
        "`dispatch-wf@<project>.iam.gserviceaccount.com`",
        "the service account of the dispatch workflow's calls to its steps",
    ),
    Variable(
        "MERIDIAN_PUSH_CERTS_URL",
        "",
        "a JWKS URL: when set, push, Eventarc and Scheduler tokens are verified against "
        "it (signature, audience, issuer, expiry); unset, Cloud Run's IAM has verified "
        "them and only their claims are read",
    ),
    Variable(
        "MERIDIAN_IDENTITY_CERTS_URL",
        "Identity Platform's",
        "where the keys signing drivers' and dispatchers' ID tokens are published",
    ),
    Variable(
        "MERIDIAN_TRACKING_BASE_URL",
        "the live map's URL",
        "where a customer's SMS tracking link opens the map",
    ),
    Variable(
        "MERIDIAN_IDENTITY_TENANTS",
        "",
        "Identity Platform tenants (comma-separated ids) whose users may sign in; unset,"
        " only users of no tenant",
    ),
    Variable(
        "MERIDIAN_WEBHOOK_ALLOW_NETWORKS",
        "",
        "CIDRs or host names, comma-separated, that client webhook endpoints may resolve"
        " to although internal (local receivers, tests)",
    ),
    Variable(
        "MERIDIAN_TELEMETRY_MAX_SKEW_S",
        "`300`",
        "seconds a ping's `recorded_at` may lie ahead of the command service's clock; a "
        "ping further ahead is refused with the reason",
    ),
    Variable(
        "MERIDIAN_TELEMETRY_MAX_AGE_S",
        "`86400`",
        "seconds a ping may be old and still be accepted (a phone offline for a shift "
        "uploads its backlog)",
    ),
    Variable(
        "MERIDIAN_LOG_LEVEL",
        "`INFO`",
        "JSON logs on stdout (and one file per service under `<data dir>/logs/` with "
        "`meridian up`); uvicorn's own lines stay at `warning` unless it is set",
    ),
    Variable(
        "MERIDIAN_TRACE_EXPORT",
        "`cloud-trace` with `gcp`, none embedded",
        "where OpenTelemetry spans go: `cloud-trace`, `console` (stderr) or `none`",
    ),
    Variable(
        "MERIDIAN_TRACE_SAMPLE_RATIO",
        "`1.0`",
        "the share of new traces recorded while spans are exported",
    ),
    Variable(
        "MERIDIAN_SMS_URL",
        "",
        f"{_GCP}the SMS provider's URL",
    ),
    Variable(
        "MERIDIAN_SMS_API_KEY_SECRET",
        "",
        f"{_GCP}the Secret Manager secret holding the SMS provider's API key",
    ),
    Variable(
        "MERIDIAN_BILLING_URL",
        "",
        f"{_GCP}the client billing API's URL",
    ),
    Variable(
        "MERIDIAN_BILLING_API_KEY_SECRET",
        "",
        f"{_GCP}the secret holding the billing API's key",
    ),
    Variable(
        "MERIDIAN_ROUTES_API_KEY_SECRET",
        "",
        f"{_GCP}the secret holding the Routes API key (ETA travel times)",
    ),
    Variable(
        "MERIDIAN_POD_BUCKET",
        "",
        f"{_GCP}the Cloud Storage bucket of proof-of-delivery photos",
    ),
    Variable(
        "MERIDIAN_TRACKING_SECRET",
        "",
        f"{_GCP}the key that signs customers' tracking tokens (embedded: a key file in the data"
        " dir)",
    ),
    Variable(
        "MERIDIAN_SMS_API_KEY",
        "",
        f"{_GCP}the SMS API key itself, as Cloud Run puts a secret in the environment; when "
        "set, `MERIDIAN_SMS_API_KEY_SECRET` is not read",
    ),
    Variable(
        "MERIDIAN_BILLING_API_KEY",
        "",
        f"{_GCP}the billing API key itself (instead of `MERIDIAN_BILLING_API_KEY_SECRET`)",
    ),
    Variable(
        "MERIDIAN_ROUTES_API_KEY",
        "",
        f"{_GCP}the Routes API key itself (instead of `MERIDIAN_ROUTES_API_KEY_SECRET`)",
    ),
    Variable(
        "MERIDIAN_<NAME>_WORKFLOW",
        "",
        f"{_GCP}the Cloud Workflows workflow `<name>` runs on, "
        "`projects/P/locations/L/workflows/W`; `MERIDIAN_DISPATCH_WORKFLOW` for the "
        "dispatch saga",
    ),
    Variable(
        "MERIDIAN_LEGACY_DSN",
        "",
        "the legacy monolith's PostgreSQL as a libpq connection string, for the migration "
        "bridge (`services/sync`); when set, the `MERIDIAN_LEGACY_*` fields below are not read",
    ),
    Variable(
        "MERIDIAN_LEGACY_HOST",
        "",
        f"{_GCP}the monolith's Cloud SQL instance, by its private IP",
    ),
    Variable(
        "MERIDIAN_LEGACY_PORT",
        "`5432`",
        "the monolith's PostgreSQL port (with `MERIDIAN_LEGACY_HOST`)",
    ),
    Variable(
        "MERIDIAN_LEGACY_DATABASE",
        "`monolith`",
        "the monolith's database (with `MERIDIAN_LEGACY_HOST`)",
    ),
    Variable(
        "MERIDIAN_LEGACY_USER",
        "`meridian-bridge`",
        "the bridge's PostgreSQL user (with `MERIDIAN_LEGACY_HOST`); it needs "
        "`pg_read_all_stats` to see open transactions (`services/sync/pull.py`)",
    ),
    Variable(
        "MERIDIAN_LEGACY_PASSWORD_SECRET",
        "",
        f"{_GCP}the Secret Manager secret holding the bridge user's password",
    ),
    Variable(
        "MERIDIAN_LEGACY_PASSWORD",
        "",
        f"{_GCP}the password itself, as Cloud Run puts a secret in the environment; when set, "
        "`MERIDIAN_LEGACY_PASSWORD_SECRET` is not read",
    ),
    Variable(
        "MERIDIAN_SYNC_PAGE_SIZE",
        "`500`",
        "rows per page of the bridge's pull: one `SyncRequested` event each",
    ),
    Variable(
        "MERIDIAN_SYNC_IN_FLIGHT_S",
        "`300`",
        "the bridge's in-flight window in seconds: a record changed on either side more "
        "recently is not counted as a reconciliation difference (it may be on its way across; "
        "`docs/migration.md`)",
    ),
    Variable(
        "MERIDIAN_START_TIMEOUT",
        "`90`",
        "seconds `meridian up` waits for every service to be healthy",
    ),
    Variable(
        "MERIDIAN_TTL_SWEEP_S",
        "`60`",
        "how often the embedded platform deletes expired ledger documents (Firestore's TTL)",
    ),
    Variable(
        "MERIDIAN_WORKFLOWS_DIR",
        "the packaged `workflows/`",
        "the workflow definitions the embedded Workflows engine runs",
    ),
    Variable(
        "MERIDIAN_EVENTARC_MIN_BACKOFF",
        "`10`",
        "the embedded Eventarc's first retry backoff in seconds (Eventarc's own value)",
    ),
    Variable(
        "MERIDIAN_EVENTARC_MAX_BACKOFF",
        "`600`",
        "the embedded Eventarc's longest retry backoff in seconds",
    ),
    Variable(
        "MERIDIAN_SLA_TICK_S",
        "`30`",
        "how often the embedded platform calls the ETA reactor's SLA check (Cloud "
        "Scheduler's job on GCP)",
    ),
    Variable(
        "MERIDIAN_SCHEDULE_FIRE_S",
        "`60`",
        "how often the embedded platform fires the dispatch schedules, opening the windows due "
        "(Cloud Scheduler's job, every minute, on GCP)",
    ),
    Variable(
        "MERIDIAN_SYNC_PULL_S",
        "`60`",
        "how often the embedded platform runs the migration bridge's `sync-pull` job, when "
        "`MERIDIAN_LEGACY_DSN` is set (Cloud Scheduler's job, every minute, on GCP)",
    ),
    Variable(
        "MERIDIAN_SYNC_READY_TIMEOUT_S",
        "`120`",
        "how long `workflows/sync.yaml` polls the `sync-ready` job before the run ends in "
        "`SyncError` (the workflow's environment; on GCP set by terraform/)",
    ),
    Variable(
        "MERIDIAN_SMS_LATENCY_S",
        "`0`",
        "latency the local SMS gateway stand-in injects from its start (`PUT /v1/config`"
        " changes it while it runs)",
    ),
    Variable(
        "MERIDIAN_SMS_FAILURE_RATE",
        "`0`",
        "the share of requests the local SMS gateway stand-in fails",
    ),
    Variable(
        "MERIDIAN_BILLING_LATENCY_S",
        "`0`",
        "latency the local billing API stand-in injects",
    ),
    Variable(
        "MERIDIAN_BILLING_FAILURE_RATE",
        "`0`",
        "the share of requests the local billing API stand-in fails",
    ),
)


def markdown() -> str:
    """docs/configuration.md: every variable of ``VARIABLES``, and where the others are read."""
    rows = "\n".join(f"| `{v.name}` | {v.default} | {v.meaning} |" for v in VARIABLES)
    return f"""# Configuration

<!-- Generated from meridian/config.py by `python -m meridian.config --markdown`; do not edit.
     tests/unit/test_docs_examples.py fails when this file and the code disagree. -->

Every service reads its settings once, at start, from the environment
(`Settings.from_env` in [`meridian/config.py`](../meridian/config.py)). Nothing has to be set to
run on the embedded runtime: `meridian up` derives ports, keys and identities from the data
directory. On Google Cloud, `terraform/` sets what each service needs (`GCP_SERVICE_ENV`), and a
value an adapter needs and lacks stops the service at start, naming the variable.

| variable | default | meaning |
|---|---|---|
{rows}

## Read elsewhere

- **Command-line options.** Every option of `meridian` and its subcommands also reads an
  environment variable, named in its `--help` (for example `MERIDIAN_DURATION` for
  `meridian up --duration`, `MERIDIAN_CATALOG` for `--catalog`).
- **The live map's own options** (`LIVE_MAP_ROLE`, `LIVE_MAP_DEBOUNCE_S`,
  `LIVE_MAP_MAX_OUTSTANDING`, `LIVE_MAP_TILE_URL`, `LIVE_MAP_TILE_ATTRIBUTION`,
  `LIVE_MAP_ASSETS`): `MapOptions` in
  [`services/live_map/bootstrap.py`](../services/live_map/bootstrap.py). `LIVE_MAP_TILE_URL`
  is empty by default, so the map draws on a plain background and needs no network.
- **The geofence job's options** (`GEOFENCE_*`): `python -m pipelines.geofence --help` and
  [`pipelines/geofence/README.md`](../pipelines/geofence/README.md).
"""


def _service_name(variable_part: str) -> str:
    """``LIVE_MAP`` (from a variable's name) -> ``live-map``."""
    return variable_part.lower().replace("_", "-")


@dataclass(frozen=True)
class _Reader:
    """Typed reads that name the variable when its value does not parse."""

    env: Mapping[str, str]

    def number(self, variable: str, default: float) -> float:
        raw = self.env.get(variable)
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{variable} must be a number, not {raw!r}") from None

    def integer(self, variable: str, default: int) -> int:
        found = self.optional_integer(variable)
        return default if found is None else found

    def optional_integer(self, variable: str) -> int | None:
        raw = self.env.get(variable)
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{variable} must be an integer, not {raw!r}") from None

    def choice(self, variable: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self.env.get(variable)
        if raw is None:
            return default
        if raw not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{variable} must be one of {names}, not {raw!r}")
        return raw

    def faults(self, prefix: str) -> Faults:
        return Faults(
            latency_s=self.number(f"{prefix}_LATENCY_S", 0.0),
            failure_rate=self.number(f"{prefix}_FAILURE_RATE", 0.0),
        )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m meridian.config", description="Meridian's environment variables."
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print docs/configuration.md (the default)"
    )
    parser.parse_args()
    print(markdown(), end="")
