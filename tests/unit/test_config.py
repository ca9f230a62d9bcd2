"""Configuration is read once, in ``meridian/config.py``: every variable into a typed field, and
nowhere else in the core or the services (checked with ast, naming file and line)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.config import (
    ConfigError,
    Embedded,
    Faults,
    Observability,
    Providers,
    Settings,
)

ROOT = Path(__file__).resolve().parents[2]

EVERY_VARIABLE = {
    "MERIDIAN_BACKEND": "gcp",
    "MERIDIAN_DATA_DIR": "/var/meridian",
    "MERIDIAN_HOST": "0.0.0.0",
    "MERIDIAN_BASE_PORT": "9100",
    "PORT": "8080",
    "MERIDIAN_PORT_COMMAND": "9000",
    "MERIDIAN_PORT_LIVE_MAP": "9001",
    "GOOGLE_CLOUD_PROJECT": "meridian-prod",
    "MERIDIAN_PUSH_IDENTITY": "push@meridian-prod.iam.gserviceaccount.com",
    "MERIDIAN_EVENTARC_IDENTITY": "trigger@meridian-prod.iam.gserviceaccount.com",
    "MERIDIAN_SCHEDULER_IDENTITY": "cron@meridian-prod.iam.gserviceaccount.com",
    "MERIDIAN_TRACKING_BASE_URL": "https://track.example.com",
    "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "10.0.0.0/8,receiver.internal",
    "MERIDIAN_TELEMETRY_MAX_SKEW_S": "120",
    "MERIDIAN_TELEMETRY_MAX_AGE_S": "3600",
    "MERIDIAN_LOG_LEVEL": "debug",
    "MERIDIAN_TRACE_EXPORT": "console",
    "MERIDIAN_TRACE_SAMPLE_RATIO": "0.25",
    "MERIDIAN_SMS_URL": "https://sms.example.com",
    "MERIDIAN_SMS_API_KEY_SECRET": "sms-key",
    "MERIDIAN_BILLING_URL": "https://billing.example.com",
    "MERIDIAN_BILLING_API_KEY_SECRET": "billing-key",
    "MERIDIAN_ROUTES_API_KEY_SECRET": "routes-key",
    "MERIDIAN_POD_BUCKET": "meridian-prod-pod",
    "MERIDIAN_TRACKING_SECRET": "s3cret",
    "MERIDIAN_DISPATCH_WORKFLOW": "projects/p/locations/l/workflows/dispatch",
    "MERIDIAN_LATE_SYNC_WORKFLOW": "projects/p/locations/l/workflows/late-sync",
    "MERIDIAN_START_TIMEOUT": "120",
    "MERIDIAN_TTL_SWEEP_S": "5",
    "MERIDIAN_WORKFLOWS_DIR": "/srv/workflows",
    "MERIDIAN_EVENTARC_MIN_BACKOFF": "0.5",
    "MERIDIAN_EVENTARC_MAX_BACKOFF": "2",
    "MERIDIAN_SLA_TICK_S": "1",
    "MERIDIAN_SMS_LATENCY_S": "0.2",
    "MERIDIAN_SMS_FAILURE_RATE": "0.1",
    "MERIDIAN_BILLING_LATENCY_S": "0.3",
    "MERIDIAN_BILLING_FAILURE_RATE": "0.5",
}


def test_every_variable_lands_in_its_field() -> None:
    settings = Settings.from_env(EVERY_VARIABLE)

    assert settings == Settings(
        backend="gcp",
        data_dir=Path("/var/meridian"),
        host="0.0.0.0",
        base_port=9100,
        port=8080,
        port_overrides={"command": 9000, "live-map": 9001},
        project="meridian-prod",
        push_identity="push@meridian-prod.iam.gserviceaccount.com",
        eventarc_identity="trigger@meridian-prod.iam.gserviceaccount.com",
        scheduler_identity="cron@meridian-prod.iam.gserviceaccount.com",
        tracking_base_url="https://track.example.com",
        webhook_allow_networks="10.0.0.0/8,receiver.internal",
        telemetry_max_skew_s=120.0,
        telemetry_max_age_s=3600.0,
        observability=Observability(
            log_level="DEBUG",
            server_log_level="debug",
            trace_export="console",
            trace_sample_ratio=0.25,
        ),
        providers=Providers(
            sms_url="https://sms.example.com",
            sms_api_key_secret="sms-key",
            billing_url="https://billing.example.com",
            billing_api_key_secret="billing-key",
            routes_api_key_secret="routes-key",
            pod_bucket="meridian-prod-pod",
            tracking_secret="s3cret",
            workflows={
                "dispatch": "projects/p/locations/l/workflows/dispatch",
                "late-sync": "projects/p/locations/l/workflows/late-sync",
            },
        ),
        embedded=Embedded(
            start_timeout_s=120.0,
            ttl_sweep_s=5.0,
            workflows_dir=Path("/srv/workflows"),
            eventarc_min_backoff_s=0.5,
            eventarc_max_backoff_s=2.0,
            sla_tick_s=1.0,
            sms_faults=Faults(latency_s=0.2, failure_rate=0.1),
            billing_faults=Faults(latency_s=0.3, failure_rate=0.5),
        ),
    )
    assert settings.port_of("command") == 9000
    assert settings.port_of("eta") == 9103
    assert settings.url_of("live-map") == "http://0.0.0.0:9001"
    assert settings.required("sms_url") == "https://sms.example.com"
    assert settings.workflow("late-sync") == "projects/p/locations/l/workflows/late-sync"


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.backend == "embedded"
    assert settings.data_dir == Path(".meridian")
    assert (settings.host, settings.base_port, settings.port) == ("127.0.0.1", 8700, None)
    assert settings.port_of("command") == 8701
    assert settings.push_identity == "pubsub-push@meridian-local.iam.gserviceaccount.com"
    assert settings.observability == Observability("INFO", "warning", "", 1.0)
    assert settings.embedded.workflows_dir is None
    assert settings.embedded.start_timeout_s == 90.0
    assert (settings.embedded.eventarc_min_backoff_s, settings.embedded.eventarc_max_backoff_s) == (
        10.0,
        600.0,
    )
    assert (settings.embedded.ttl_sweep_s, settings.embedded.sla_tick_s) == (60.0, 30.0)


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("sms_url", "MERIDIAN_SMS_URL"),
        ("sms_api_key_secret", "MERIDIAN_SMS_API_KEY_SECRET"),
        ("billing_url", "MERIDIAN_BILLING_URL"),
        ("billing_api_key_secret", "MERIDIAN_BILLING_API_KEY_SECRET"),
        ("routes_api_key_secret", "MERIDIAN_ROUTES_API_KEY_SECRET"),
        ("pod_bucket", "MERIDIAN_POD_BUCKET"),
        ("tracking_secret", "MERIDIAN_TRACKING_SECRET"),
    ],
)
def test_a_missing_production_value_names_its_variable(field: str, variable: str) -> None:
    settings = Settings.from_env({"MERIDIAN_BACKEND": "gcp"})
    with pytest.raises(ConfigError, match=f"^{variable} must be set when MERIDIAN_BACKEND=gcp$"):
        settings.required(field)


def test_the_gcp_adapters_refuse_to_start_without_their_values() -> None:
    from meridian import adapters

    settings = Settings.from_env({"MERIDIAN_BACKEND": "gcp"})
    with pytest.raises(ConfigError, match="MERIDIAN_SMS_URL must be set"):
        adapters.sms_gateway(settings)
    with pytest.raises(ConfigError, match="MERIDIAN_TRACKING_SECRET must be set"):
        adapters.tracking_tokens(settings)
    with pytest.raises(ConfigError, match="MERIDIAN_DISPATCH_WORKFLOW must be set"):
        settings.workflow("dispatch")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MERIDIAN_BACKEND", "aws"),
        ("MERIDIAN_BASE_PORT", "eighty"),
        ("PORT", "8080.5"),
        ("MERIDIAN_SLA_TICK_S", "soon"),
        ("MERIDIAN_SMS_FAILURE_RATE", "often"),
    ],
)
def test_a_malformed_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable} must be"):
        Settings.from_env({variable: value})


def test_the_readme_lists_every_variable() -> None:
    table = (ROOT / "README.md").read_text()
    generic = {
        "MERIDIAN_PORT_COMMAND": "MERIDIAN_PORT_<SERVICE>",
        "MERIDIAN_PORT_LIVE_MAP": "MERIDIAN_PORT_<SERVICE>",
        "MERIDIAN_DISPATCH_WORKFLOW": "MERIDIAN_<NAME>_WORKFLOW",
        "MERIDIAN_LATE_SYNC_WORKFLOW": "MERIDIAN_<NAME>_WORKFLOW",
    }
    missing = [v for v in EVERY_VARIABLE if f"`{generic.get(v, v)}`" not in table]
    assert not missing, f"README.md's configuration table lacks {', '.join(missing)}"


# Nothing else reads the environment ------------------------------------------------------------

# (file, function) pairs allowed to touch os.environ; None allows the whole module.
ALLOWED: dict[str, set[str] | None] = {
    "meridian/config.py": None,
    # A child process's environment starts as a copy of the supervisor's.
    "meridian/runtime/supervisor.py": {"_spawn"},
}
READERS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(source: str) -> Iterator[tuple[int, str | None]]:
    """(line, enclosing function) of each use of ``os.environ``/``os.getenv`` and relatives,
    however ``os`` or the name was imported."""
    tree = ast.parse(source)
    os_names = {"os"}
    direct: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            direct |= {a.asname or a.name for a in node.names if a.name in READERS}

    def visit(node: ast.AST, function: str | None) -> Iterator[tuple[int, str | None]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        os_attribute = (
            isinstance(node, ast.Attribute)
            and node.attr in READERS
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
        )
        imported = isinstance(node, ast.ImportFrom) and node.module == "os" and bool(direct)
        if os_attribute or imported or (isinstance(node, ast.Name) and node.id in direct):
            yield node.lineno, function
        for child in ast.iter_child_nodes(node):
            yield from visit(child, function)

    yield from visit(tree, None)


def test_only_config_reads_the_environment() -> None:
    found = []
    for folder in ("meridian", "services"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            allowed = ALLOWED.get(name, set())
            for line, function in environment_reads(path.read_text()):
                if allowed is None or function in allowed:
                    continue
                found.append(f"{name}:{line} reads the environment (take it from Settings)")
    assert not found, "\n".join(found)


def test_the_checker_finds_every_spelling() -> None:
    source = """
import os
import os as system
from os import environ, getenv as ge

A = os.environ["X"]
def f():
    return system.getenv("Y")
B = environ.get("Z")
C = ge("W")
"""
    lines = [line for line, _ in environment_reads(source)]
    assert lines == [4, 6, 8, 9, 10]
    assert dict(environment_reads(source))[8] == "f"
