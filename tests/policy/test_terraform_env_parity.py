"""One source of truth between terraform/ and the code (issue #19 item 4).

For every deployed service, what Terraform puts in its environment (``common_env``, the
catalog's ``env``, ``service_env`` and the Secret Manager references of ``service_secrets`` in
terraform/modules/meridian/services.tf) is exactly what the code reads on the gcp backend
(``meridian.config.Settings.required_env``), and the code does read each one: it is fed to
``Settings.from_env`` (and the live map's own options) through a mapping that records every
read. Every identity a service checks comes from a variable whose value is the service account
that signs those calls: Pub/Sub push, Eventarc, Cloud Scheduler, the dispatch workflow.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from meridian.config import GCP_SECRET_ENV, GCP_SERVICE_ENV, Settings
from services.live_map.bootstrap import MapOptions
from tests.policy.terraform_policy import (
    Tree,
    bare,
    load_tree,
    push_identities,
    scheduler_callers,
    unq,
)

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
PLATFORM = (TERRAFORM / "modules" / "meridian").resolve()
CATALOG = yaml.safe_load((REPO / "schemas" / "catalog.yaml").read_text())
DEPLOYED = sorted(n for n, s in CATALOG["services"].items() if s["kind"] != "pipeline")
ENV_EXPRESSION = "${merge(local.common_env, try(each.value.env, {}), local.service_env[each.key])}"
SECRETS_EXPRESSION = (
    "${{for env_name, secret in lookup(local.service_secrets, each.key, {}) : env_name => "
    "{secret = google_secret_manager_secret.default[secret].secret_id}}}"
)
# Variable => the account whose tokens it names, as the service checks them.
IDENTITY_VARIABLES = {
    "MERIDIAN_PUSH_IDENTITY": "push",
    "MERIDIAN_EVENTARC_IDENTITY": "eventarc",
    "MERIDIAN_SCHEDULER_IDENTITY": "scheduler",
    "MERIDIAN_WORKFLOW_IDENTITY": "workflow",
}


@pytest.fixture(scope="module")
def tree() -> Tree:
    return load_tree(TERRAFORM)


class Recording(Mapping[str, str]):
    """An environment that remembers which variables were read (iteration is not a read)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def terraform_env(tree: Tree, service: str) -> tuple[dict[str, str], dict[str, str]]:
    """(plain variables => expression, secret variables => secret) Terraform gives ``service``."""
    platform = tree.locals[PLATFORM]
    plain = {
        **platform["common_env"],
        **{k: f'"{v}"' for k, v in CATALOG["services"][service].get("env", {}).items()},
        **platform["service_env"][service],
    }
    secrets = {k: unq(v) for k, v in platform["service_secrets"].get(service, {}).items()}
    return plain, secrets


def env_parity_problems(tree: Tree) -> list[str]:
    """Every way Terraform's environment of a service and what its code reads differ."""
    problems: list[str] = []
    calls = [m for m in tree.modules() if m.name in ("reactor", "service")]
    for call in calls:
        if call.body.get("env") != ENV_EXPRESSION:
            problems.append(f"{call.where()}: env is not {ENV_EXPRESSION}")
        if call.body.get("secrets") != SECRETS_EXPRESSION:
            problems.append(f"{call.where()}: secrets are not {SECRETS_EXPRESSION}")
    platform = tree.locals[PLATFORM]
    for table in ("service_env", "service_secrets"):
        for extra in set(platform[table]) - set(DEPLOYED):
            problems.append(f"local.{table} lists {extra}, which the catalog does not deploy")
    for service in DEPLOYED:
        if service not in platform["service_env"]:
            problems.append(f"{service}: no entry in local.service_env")
            continue
        plain, secrets = terraform_env(tree, service)
        wanted = Settings.required_env(service, backend="gcp")
        given = set(plain) | set(secrets)
        for variable in sorted(wanted - given):
            problems.append(f"{service}: reads {variable}, which Terraform does not set")
        for variable in sorted(given - wanted):
            problems.append(f"{service}: Terraform sets {variable}, which its code does not read")
        for variable in sorted(set(plain) & GCP_SECRET_ENV):
            problems.append(
                f"{service}: {variable} is a plain value, not a Secret Manager reference"
            )
        for variable in sorted(set(secrets) - GCP_SECRET_ENV):
            problems.append(f"{service}: {variable} comes from Secret Manager, yet is no secret")
        values = {**dict.fromkeys(given, "1"), "MERIDIAN_BACKEND": "gcp"}
        recording = Recording({**values, **CATALOG["services"][service].get("env", {})})
        Settings.from_env(recording)
        if CATALOG["services"][service]["package"] == "services.live_map":
            MapOptions.from_env(recording)
        for variable in sorted(given - recording.read):
            problems.append(f"{service}: Terraform sets {variable}, which nothing reads")
        for variable, account in IDENTITY_VARIABLES.items():
            if (
                variable in plain
                and bare(plain[variable]) != f"google_service_account.{account}.email"
            ):
                problems.append(
                    f"{service}: {variable} is {plain[variable]}, "
                    f"not google_service_account.{account}.email"
                )
    return problems


def test_every_service_is_given_exactly_what_its_code_reads(tree: Tree) -> None:
    assert env_parity_problems(tree) == []


def test_the_table_lists_exactly_the_deployed_services() -> None:
    assert sorted(GCP_SERVICE_ENV) == DEPLOYED


def test_the_live_map_reads_its_role_from_the_catalog_env() -> None:
    recording = Recording({"LIVE_MAP_ROLE": "writer"})
    assert MapOptions.from_env(recording).role == "writer"
    assert "LIVE_MAP_ROLE" in recording.read


# The identities the code checks are the ones Terraform creates and signs with ----------------


def test_push_identity_is_the_account_pubsub_signs_pushes_as(tree: Tree) -> None:
    assert push_identities(tree) == {"google_service_account.push"}
    for reactor in (n for n in DEPLOYED if CATALOG["services"][n]["kind"] == "push-reactor"):
        plain, _ = terraform_env(tree, reactor)
        assert bare(plain["MERIDIAN_PUSH_IDENTITY"]) == "google_service_account.push.email"


def test_eventarc_identity_is_the_account_the_triggers_deliver_as(tree: Tree) -> None:
    (call,) = [m for m in tree.modules() if m.name == "eventarc"]
    assert bare(call.body["service_account_email"]) == "google_service_account.eventarc.email"
    (trigger,) = [t for t in tree.of("google_eventarc_trigger") if t.name == "default"]
    assert bare(trigger.body["service_account"]) == "var.service_account_email"
    targets = {t["service"] for t in CATALOG["triggers"].values()}
    for service in targets:
        plain, _ = terraform_env(tree, service)
        assert bare(plain["MERIDIAN_EVENTARC_IDENTITY"]) == "google_service_account.eventarc.email"


def test_scheduler_identity_is_the_account_the_sla_tick_calls_eta_as(tree: Tree) -> None:
    assert scheduler_callers(tree) == {
        "eta": {"google_service_account.scheduler"},
        "command": {"google_service_account.scheduler"},  # firing the dispatch schedules
    }
    for service in ("eta", "command"):
        plain, _ = terraform_env(tree, service)
        identity = bare(plain["MERIDIAN_SCHEDULER_IDENTITY"])
        assert identity == "google_service_account.scheduler.email"


def test_workflow_identity_is_the_account_the_dispatch_saga_runs_as(tree: Tree) -> None:
    (call,) = [m for m in tree.modules() if m.name == "dispatch_workflow"]
    assert bare(call.body["service_account_email"]) == "google_service_account.workflow.email"
    plain, _ = terraform_env(tree, "dispatch")
    assert bare(plain["MERIDIAN_WORKFLOW_IDENTITY"]) == "google_service_account.workflow.email"
    invokers = tree.locals[PLATFORM]["front_invokers"]
    assert "google_service_account.workflow.member" in invokers


def test_identities_terraform_names_are_the_variables_the_code_reads() -> None:
    env = {v: f"{a}@p.iam.gserviceaccount.com" for v, a in IDENTITY_VARIABLES.items()}
    settings = Settings.from_env(env)
    assert settings.push_identity == env["MERIDIAN_PUSH_IDENTITY"]
    assert settings.eventarc_identity == env["MERIDIAN_EVENTARC_IDENTITY"]
    assert settings.scheduler_identity == env["MERIDIAN_SCHEDULER_IDENTITY"]
    assert settings.workflow_identity == env["MERIDIAN_WORKFLOW_IDENTITY"]


# The parity check bites ------------------------------------------------------------------------


def broken(tree: Tree, change: Any) -> Tree:
    other = copy.deepcopy(tree)
    change(other.locals[PLATFORM])
    return other


def test_parity_reports_a_variable_the_code_reads_and_terraform_does_not_set(tree: Tree) -> None:
    other = broken(tree, lambda p: p["service_env"]["eta"].pop("MERIDIAN_SCHEDULER_IDENTITY"))
    assert env_parity_problems(other) == [
        "eta: reads MERIDIAN_SCHEDULER_IDENTITY, which Terraform does not set"
    ]


def test_parity_reports_what_terraform_used_to_inject_and_nothing_reads(tree: Tree) -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["service_secrets"]["billing"]["BILLING_API_KEY"] = '"billing-api-key"'
        platform["service_env"]["eta"]["MERIDIAN_SERVICE"] = '"eta"'

    problems = env_parity_problems(broken(tree, change))
    assert "billing: Terraform sets BILLING_API_KEY, which its code does not read" in problems
    assert "billing: BILLING_API_KEY comes from Secret Manager, yet is no secret" in problems
    assert "billing: Terraform sets BILLING_API_KEY, which nothing reads" in problems
    assert "eta: Terraform sets MERIDIAN_SERVICE, which nothing reads" in problems


def test_parity_reports_a_secret_given_as_a_plain_value(tree: Tree) -> None:
    def change(platform: dict[str, Any]) -> None:
        del platform["service_secrets"]["eta"]
        platform["service_env"]["eta"]["MERIDIAN_ROUTES_API_KEY"] = "${var.routes_key}"

    assert env_parity_problems(broken(tree, change)) == [
        "eta: MERIDIAN_ROUTES_API_KEY is a plain value, not a Secret Manager reference"
    ]


def test_parity_reports_an_identity_that_is_not_the_signing_account(tree: Tree) -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["service_env"]["billing"]["MERIDIAN_PUSH_IDENTITY"] = (
            '"${var.prefix}-pubsub-push@${var.project_id}.iam.gserviceaccount.com"'
        )

    (problem,) = env_parity_problems(broken(tree, change))
    assert re.match(
        r"billing: MERIDIAN_PUSH_IDENTITY is .* not google_service_account.push", problem
    )
