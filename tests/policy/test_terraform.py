"""terraform/ checked offline: every file parses, the catalog drives the topology, and the
policies in terraform_policy.py hold — each policy is also shown to report a broken snippet."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from meridian.catalog import load_catalog, parse_duration
from tests.policy.terraform_policy import (
    Tree,
    check_dead_letter_topics,
    check_push_subscriptions,
    check_reactor_exposure,
    check_service_account_keys,
    check_subscription_wiring,
    check_workflow_source,
    deployed_services,
    load_tree,
    scan_secrets,
    unq,
)

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
CATALOG_PATH = REPO / "schemas" / "catalog.yaml"
WORKFLOW = REPO / "workflows" / "dispatch.yaml"
# The migration bridge's pipeline (#21): a second workflow, deployed by the same module.
SYNC_WORKFLOW = REPO / "workflows" / "sync.yaml"
TF_FILES = sorted(TERRAFORM.rglob("*.tf"))
VAR_FILES = sorted(TERRAFORM.rglob("*.tfvars"))


@pytest.fixture(scope="module")
def tree() -> Tree:
    return load_tree(TERRAFORM)


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    return yaml.safe_load(CATALOG_PATH.read_text())


class Copy:
    """terraform/ and schemas/ copied to a temporary repository, to break on purpose."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(TERRAFORM, root / "terraform")
        shutil.copytree(REPO / "schemas", root / "schemas")
        self.catalog_path = (root / "schemas" / "catalog.yaml").resolve()

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / "terraform" / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1))

    def edit_catalog(self, change: Any) -> None:
        data = yaml.safe_load(self.catalog_path.read_text())
        change(data)
        self.catalog_path.write_text(yaml.safe_dump(data))

    @property
    def catalog(self) -> dict[str, Any]:
        return yaml.safe_load(self.catalog_path.read_text())

    def tree(self) -> Tree:
        return load_tree(self.root / "terraform")


@pytest.fixture
def copy(tmp_path: Path) -> Copy:
    return Copy(tmp_path / "repo")


def snippet(tmp_path: Path, text: str, name: str = "main.tf") -> Tree:
    directory = tmp_path / "snippet"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return load_tree(directory)


def only(problems: list[str], *fragments: str) -> None:
    """Every fragment is reported by some problem."""
    for fragment in fragments:
        assert any(fragment in p for p in problems), f"{fragment!r} not reported in {problems}"


# Parsing and style ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    with path.open() as handle:
        assert isinstance(hcl2.load(handle), dict)


def test_there_is_a_root_per_environment() -> None:
    # the environments the release promotes through (.github/workflows/release.yml)
    release = (TERRAFORM.parent / ".github" / "workflows" / "release.yml").read_text()
    for env in ("dev", "staging", "prod"):
        assert f"environment: {env}" in release, env
        root = TERRAFORM / "environments" / env
        assert (root / "main.tf").exists() and (root / "terraform.tfvars").exists()
        assert 'backend "gcs"' in (root / "versions.tf").read_text()


@pytest.mark.parametrize("kind", ["variable", "output"])
def test_variables_and_outputs_are_alphabetical_and_variables_typed(kind: str) -> None:
    for path in TF_FILES:
        with path.open() as handle:
            blocks = hcl2.load(handle).get(kind, [])
        names = [unq(next(iter(b))) for b in blocks]
        assert names == sorted(names), f"{path}: {kind}s out of order: {names}"
        for block in blocks if kind == "variable" else []:
            ((name, body),) = block.items()
            assert "type" in body and "description" in body, f"{path}: variable {name} untyped"


def test_every_module_and_root_has_a_prefix_variable(tree: Tree) -> None:
    for directory in {p.parent for p in TF_FILES}:
        text = (directory / "variables.tf").read_text()
        if directory.name not in ("firestore",):  # the database is named, not prefixed
            assert 'variable "prefix"' in text, directory


# The real tree is compliant -------------------------------------------------------------------


def test_policies_hold_on_terraform(tree: Tree, catalog: dict[str, Any]) -> None:
    assert check_service_account_keys(tree) == []
    assert scan_secrets(TF_FILES + VAR_FILES) == []
    assert check_workflow_source(tree, {WORKFLOW, SYNC_WORKFLOW}) == []
    assert check_subscription_wiring(tree, catalog, CATALOG_PATH) == []
    assert check_push_subscriptions(tree, catalog, CATALOG_PATH) == []
    assert check_dead_letter_topics(tree, catalog, CATALOG_PATH) == []
    assert check_reactor_exposure(tree, catalog, CATALOG_PATH) == []


def test_no_service_account_key_anywhere() -> None:
    for path in TF_FILES:
        assert "google_service_account_key" not in path.read_text(), path


def test_the_only_workflow_reads_workflows_dispatch_yaml(tree: Tree) -> None:
    # one workflow resource (modules/workflows), called once per file of workflows/
    workflows = tree.of("google_workflows_workflow")
    assert len(workflows) == 1
    assert check_workflow_source(tree, {WORKFLOW, SYNC_WORKFLOW}) == []
    calls = [m for m in tree.modules() if unq(str(m.body.get("source", ""))) == "../workflows"]
    sources = sorted(unq(str(m.body["source_path"])).rsplit("/", 1)[-1] for m in calls)
    assert sources == ["dispatch.yaml", "sync.yaml"]


def test_every_catalog_service_but_pipelines_is_one_cloud_run_service(
    tree: Tree, catalog: dict[str, Any]
) -> None:
    wanted = {n for n, s in catalog["services"].items() if s["kind"] != "pipeline"}
    assert deployed_services(tree, catalog, CATALOG_PATH) == dict.fromkeys(wanted, 1)


def test_min_instances_and_commands_come_from_the_catalog(tree: Tree) -> None:
    calls = {m.name: m for m in tree.modules() if m.name in ("reactor", "service")}
    assert len(calls) == 2
    # Reactors working between requests (client-webhook's retries) keep one instance at least.
    assert calls["reactor"].body["scaling"]["min_instances"] == (
        "${max(try(each.value.min_instances, 0), "
        "contains(local.background_work, each.key) ? 1 : 0)}"
    )
    assert (
        calls["service"].body["scaling"]["min_instances"] == "${try(each.value.min_instances, 0)}"
    )
    for call in calls.values():
        # One image: `meridian serve <catalog service>` picks the service.
        assert call.body["command"] == ['"meridian"']
        assert call.body["args"] == ['"serve"', "${each.key}"]


def test_catalog_min_instances_are_where_the_design_wants_them() -> None:
    services = load_catalog().services
    assert services["command"].min_instances >= 1 and services["eta"].min_instances >= 1


def test_eventarc_triggers_come_from_the_catalog(tree: Tree) -> None:
    (trigger,) = [t for t in tree.of("google_eventarc_trigger") if t.name == "default"]
    assert trigger.body["for_each"] == "${var.triggers}"
    (call,) = [m for m in tree.modules() if m.name == "eventarc"]
    assert call.body["triggers"] == "${local.catalog.triggers}"
    criteria = {unq(c["attribute"]): c for c in trigger.body["matching_criteria"]}
    assert unq(criteria["document"]["operator"]) == "match-path-pattern"
    assert set(load_catalog().triggers) == {"parcel-changes", "shipment-changes"}


def test_durations_are_converted_like_the_catalog_loader(
    tree: Tree, catalog: dict[str, Any]
) -> None:
    """The HCL regex and unit table, applied in Python, agree with meridian.catalog."""
    pubsub = tree.locals[TERRAFORM / "modules" / "pubsub"]
    pattern = unq(pubsub["duration_pattern"]).replace("\\\\", "\\")
    units = {unq(k): v for k, v in pubsub["unit_seconds"].items()}
    durations = {"7d", "10s", "600s"}
    for spec in [*catalog["topics"].values(), *catalog["subscriptions"].values()]:
        durations |= {str(spec[k]) for k in ("message_retention",) if k in spec}
        durations |= {str(v) for v in spec.get("retry", {}).values()}
    for text in durations:
        number, unit = re.fullmatch(pattern, text).groups()  # type: ignore[union-attr]
        assert int(float(number) * units[unit]) == parse_duration(text), text


def test_schemas_attach_only_to_topics_naming_one(tree: Tree, catalog: dict[str, Any]) -> None:
    (schema,) = tree.of("google_pubsub_schema")
    assert schema.body["for_each"] == "${local.catalog.event_types}"
    (topic,) = tree.of("google_pubsub_topic")
    (settings,) = topic.body["dynamic"]
    content = settings['"schema_settings"']["content"][0]
    assert unq(content["encoding"]) == "BINARY"
    assert "each.value.schema == null" in settings['"schema_settings"']["for_each"]
    assert catalog["topics"]["vehicle.telemetry"]["schema"] == "VehiclePing"
    assert "schema" not in catalog["topics"]["logistics.events"]


def test_dead_lettering_permissions_and_bigquery_archive(tree: Tree) -> None:
    roles = {
        (b.name, unq(b.body["role"]))
        for b in tree.of("google_pubsub_topic_iam_member", "google_pubsub_subscription_iam_member")
    }
    assert ("dead_letter_publisher", "roles/pubsub.publisher") in roles
    assert ("dead_letter_subscriber", "roles/pubsub.subscriber") in roles
    assert ("consumer_dead_letters", "roles/pubsub.publisher") in roles  # the geofence job's own
    (table,) = tree.of("google_bigquery_table")
    (partitioning,) = table.body["time_partitioning"]
    assert unq(partitioning["type"]) == "DAY" and "expiration_ms" in partitioning


def test_firestore_ttl_ledgers_and_prod_multi_region(tree: Tree) -> None:
    (call,) = [m for m in tree.modules() if m.name == "firestore"]
    ttl = {k: unq(v) for k, v in call.body["ttl_collections"].items()}
    assert {"idempotency_keys", "processed_events"} <= set(ttl) and set(ttl.values()) == {
        "expire_at"
    }
    (prod,) = [m for m in tree.modules() if m.name == "meridian" and m.dir.name == "prod"]
    assert unq(prod.body["firestore"]["location"]) in {"nam5", "eur3"}
    (database,) = tree.of("google_firestore_database")
    assert unq(database.body["type"]) == "FIRESTORE_NATIVE"


def test_alerts_per_subscription_and_command_latency(tree: Tree) -> None:
    names = {b.name for b in tree.of("google_monitoring_alert_policy")}
    assert {"oldest_unacked", "dead_lettered", "dead_letter_depth", "latency_p99"} <= names
    (call,) = [m for m in tree.modules() if m.name == "monitoring"]
    assert "local.catalog.subscriptions" in call.body["subscriptions"]
    assert "command" in call.body["latency_slos"]


def test_dead_letter_depth_is_alerted_per_consumer_on_its_own_subscription(tree: Tree) -> None:
    (depth,) = [
        b for b in tree.of("google_monitoring_alert_policy") if b.name == "dead_letter_depth"
    ]
    assert depth.body["for_each"] == "${local.forwarding_subscriptions}"
    monitoring = tree.locals[TERRAFORM / "modules" / "monitoring"]
    assert "s.dead_letters_to != null" in monitoring["forwarding_subscriptions"]
    (condition,) = depth.body["conditions"]
    (threshold,) = condition["condition_threshold"]
    assert "each.value.dead_letters_in" in threshold["filter"]
    assert "num_undelivered_messages" in threshold["filter"]
    (call,) = [m for m in tree.modules() if m.name == "monitoring"]
    assert "local.dead_letter_keepers[s.dead_letter_topic]" in call.body["subscriptions"]
    meridian = tree.locals[TERRAFORM / "modules" / "meridian"]
    assert "s.topic => name" in meridian["dead_letter_keepers"]


# Each policy bites: subscription wiring -------------------------------------------------------


def test_wiring_reports_a_filtered_for_each(copy: Copy) -> None:
    copy.edit(
        "modules/pubsub/main.tf",
        "      topic = s.topic\n    }\n  }",
        '      topic = s.topic\n    } if s.delivery.type != "bigquery"\n  }',
    )
    problems = check_subscription_wiring(copy.tree(), copy.catalog, copy.catalog_path)
    only(problems, "filters the catalog's subscriptions", "'telemetry-archive' is missing")


def test_wiring_reports_a_subscription_declared_by_hand(copy: Copy) -> None:
    (copy.root / "terraform" / "modules" / "pubsub" / "extra.tf").write_text(
        'resource "google_pubsub_subscription" "audit" {\n  name  = "${local.prefix}audit"\n'
        '  topic = google_pubsub_topic.default["logistics.events"].id\n}\n'
    )
    problems = check_subscription_wiring(copy.tree(), copy.catalog, copy.catalog_path)
    only(
        problems,
        "'audit' is declared by hand",
        "Terraform subscription 'audit' is not in the catalog",
    )


def test_wiring_reports_catalog_and_terraform_sets_that_differ(tmp_path: Path) -> None:
    catalog = {"subscriptions": {"eta": {"topic": "t"}, "pod": {"topic": "t"}}}
    tree = snippet(
        tmp_path,
        'resource "google_pubsub_subscription" "default" {\n'
        '  for_each = { eta = { topic = "t" }, ghost = { topic = "t" } }\n'
        "  name     = each.key\n  topic    = each.value.topic\n}\n",
    )
    problems = check_subscription_wiring(tree, catalog, tmp_path / "catalog.yaml")
    only(problems, "hand-written map", "'pod' is missing", "'ghost' is not in the catalog")


def test_wiring_reports_a_for_each_reading_another_file(copy: Copy) -> None:
    copy.edit("modules/meridian/main.tf", "schemas/catalog.yaml", "schemas/other.yaml")
    problems = check_subscription_wiring(copy.tree(), copy.catalog, copy.catalog_path)
    only(problems, "not the catalog", "'eta' is missing")


def test_wiring_reports_an_unmapped_or_dropped_attribute(copy: Copy) -> None:
    copy.edit_catalog(lambda c: c["subscriptions"]["eta"].update(exactly_once=True))
    copy.edit("modules/pubsub/main.tf", "  filter                     = each.value.filter\n", "")
    copy.edit(
        "modules/pubsub/main.tf", "      ordering              = try(s.ordering, false)\n", ""
    )
    problems = check_subscription_wiring(copy.tree(), copy.catalog, copy.catalog_path)
    only(
        problems,
        "'exactly_once' is not mapped",
        "'filter' is not mapped onto filter",
        "ignores the catalog's 'ordering'",
    )


# Each policy bites: push subscriptions --------------------------------------------------------


def test_push_reports_missing_oidc_token(copy: Copy) -> None:
    copy.edit("modules/pubsub/main.tf", "oidc_token {", "oidc_tokens_removed {")
    problems = check_push_subscriptions(copy.tree(), copy.catalog, copy.catalog_path)
    only(problems, "no oidc_token")


def test_push_reports_a_catalog_push_subscription_without_dead_letter_topic(copy: Copy) -> None:
    copy.edit_catalog(lambda c: c["subscriptions"]["eta"].pop("dead_letter_topic"))
    problems = check_push_subscriptions(copy.tree(), copy.catalog, copy.catalog_path)
    only(problems, "'eta' has no dead_letter_topic")


def test_push_reports_a_hand_written_subscription_without_dead_letter_or_token(
    tmp_path: Path,
) -> None:
    tree = snippet(
        tmp_path,
        """
resource "google_pubsub_subscription" "billing" {
  name   = "billing-parcel-delivered"
  topic  = google_pubsub_topic.events.id
  filter = "attributes.eventType = \\"ParcelDelivered\\""
  push_config {
    push_endpoint = "${google_cloud_run_v2_service.billing.uri}/events"
  }
}
""",
    )
    problems = check_push_subscriptions(tree, {"subscriptions": {}}, tmp_path / "catalog.yaml")
    only(problems, "no oidc_token", "without dead_letter_policy")


# Each policy bites: dead letters per consumer --------------------------------------------------


def test_dead_letters_report_a_topic_shared_in_the_catalog(copy: Copy) -> None:
    def share(catalog: dict[str, Any]) -> None:
        catalog["subscriptions"]["billing"]["dead_letter_topic"] = "eta.dlq"
        catalog["subscriptions"]["eta"]["dead_letter_topic"] = "eta.dlq"
        catalog["subscriptions"]["audit-dead-letters"] = {
            "topic": "eta.dlq",
            "delivery": {"type": "pull", "consumer": "operator"},
        }
        catalog["subscriptions"]["pod"]["dead_letter_topic"] = "nowhere.dlq"

    copy.edit_catalog(share)
    problems = check_dead_letter_topics(copy.tree(), copy.catalog, copy.catalog_path)
    only(
        problems,
        "billing, eta share the dead-letter topic 'eta.dlq'",
        "'eta.dlq' is kept by 2 subscriptions (audit-dead-letters, eta-dead-letters)",
        "'nowhere.dlq' is not a catalog topic",
        "'nowhere.dlq' is kept by 0 subscriptions (none)",
    )


def test_dead_letters_report_one_topic_written_for_every_subscription(copy: Copy) -> None:
    copy.edit(
        "modules/pubsub/main.tf",
        "      dead_letter_topic     = google_pubsub_topic.default[dead_letter_policy.value].id",
        '      dead_letter_topic     = google_pubsub_topic.default["logistics.events.dlq"].id',
    )
    copy.edit(
        "modules/pubsub/main.tf",
        "      dead_letter_topic     = try(s.dead_letter_topic, null)",
        '      dead_letter_topic     = "logistics.events.dlq"',
    )
    problems = check_dead_letter_topics(copy.tree(), copy.catalog, copy.catalog_path)
    only(
        problems,
        "is not the subscription's own (dead_letter_policy.value)",
        "for_each input's dead_letter_topic is not the catalog subscription's own",
    )


def test_dead_letters_report_a_static_policy_in_a_for_each_or_shared_by_hand(
    tmp_path: Path,
) -> None:
    tree = snippet(
        tmp_path,
        """
resource "google_pubsub_subscription" "reactors" {
  for_each = toset(["eta", "billing"])
  name     = each.key
  topic    = "logistics-events"
  dead_letter_policy {
    dead_letter_topic = "logistics-events-dlq"
  }
}

resource "google_pubsub_subscription" "pod" {
  name  = "pod"
  topic = "logistics-events"
  dead_letter_policy {
    dead_letter_topic = "shared-dlq"
  }
}

resource "google_pubsub_subscription" "notification" {
  name  = "notification"
  topic = "logistics-events"
  dead_letter_policy {
    dead_letter_topic = "shared-dlq"
  }
}
""",
    )
    problems = check_dead_letter_topics(tree, {"subscriptions": {}}, tmp_path / "catalog.yaml")
    only(
        problems,
        'one dead_letter_topic ("logistics-events-dlq") for every subscription of its for_each',
        'dead-letter topic "shared-dlq" is shared by',
    )


# Each policy bites: reactor exposure ----------------------------------------------------------


def test_reactors_report_public_ingress(copy: Copy) -> None:
    copy.edit(
        "modules/meridian/services.tf",
        'ingress       = "INGRESS_TRAFFIC_INTERNAL_ONLY"',
        'ingress       = "INGRESS_TRAFFIC_ALL"',
    )
    problems = check_reactor_exposure(copy.tree(), copy.catalog, copy.catalog_path)
    only(problems, 'have ingress "INGRESS_TRAFFIC_ALL", not internal')


def test_reactors_report_an_extra_invoker(copy: Copy) -> None:
    copy.edit(
        "modules/meridian/services.tf",
        "invokers      = { pubsub-push = google_service_account.push.member }",
        "invokers      = { pubsub-push = google_service_account.push.member, "
        "eventarc = google_service_account.eventarc.member }",
    )
    problems = check_reactor_exposure(copy.tree(), copy.catalog, copy.catalog_path)
    only(
        problems,
        "granted to ${google_service_account.eventarc.member}, not the push service account",
    )


def test_reactors_report_being_deployed_by_the_generic_module(copy: Copy) -> None:
    copy.edit(
        "modules/meridian/services.tf",
        'front_services = { for name, s in local.run_services : name => s if s.kind != "push-reactor" }',
        "front_services = local.run_services",
    )
    problems = check_reactor_exposure(copy.tree(), copy.catalog, copy.catalog_path)
    # the generic module computes ingress and invokers: unprovable for a reactor, so reported
    only(
        problems,
        "have ingress contains(keys(local.public_services), each.key)",
        "invokers is not a literal list or map",
    )


def test_reactors_report_project_wide_invoker(copy: Copy) -> None:
    (copy.root / "terraform" / "modules" / "meridian" / "extra.tf").write_text(
        'resource "google_project_iam_member" "invoker" {\n  project = var.project_id\n'
        '  role    = "roles/run.invoker"\n  member  = google_service_account.workflow.member\n}\n'
    )
    problems = check_reactor_exposure(copy.tree(), copy.catalog, copy.catalog_path)
    only(problems, "project-wide run.invoker")


REACTOR_SNIPPET = """
resource "google_service_account" "pubsub_push" { account_id = "pubsub-push" }

resource "google_pubsub_subscription" "billing" {
  name  = "billing"
  topic = "logistics-events"
  push_config {
    push_endpoint = "${google_cloud_run_v2_service.billing.uri}/events"
    oidc_token { service_account_email = google_service_account.pubsub_push.email }
  }
  dead_letter_policy {
    dead_letter_topic     = "logistics-events-dlq"
    max_delivery_attempts = 5
  }
}

resource "google_cloud_run_v2_service" "billing" {
  name     = "billing-svc"
  location = "us-central1"
  ingress  = "INGRESS"
  template {
    containers { image = "billing" }
  }
}

resource "google_cloud_run_v2_service_iam_member" "billing_invoker" {
  name     = google_cloud_run_v2_service.billing.name
  location = google_cloud_run_v2_service.billing.location
  role     = "roles/run.invoker"
  member   = MEMBER
}
"""
SNIPPET_CATALOG = {"services": {"billing": {"kind": "push-reactor"}}, "subscriptions": {}}


def test_reactor_snippet_from_the_design_is_compliant(tmp_path: Path) -> None:
    text = REACTOR_SNIPPET.replace("INGRESS", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER").replace(
        "MEMBER", '"serviceAccount:${google_service_account.pubsub_push.email}"'
    )
    tree = snippet(tmp_path, text)
    assert check_reactor_exposure(tree, SNIPPET_CATALOG, tmp_path / "c.yaml") == []
    assert check_push_subscriptions(tree, SNIPPET_CATALOG, tmp_path / "c.yaml") == []


@pytest.mark.parametrize(
    ("ingress", "member", "reported"),
    [
        (
            "INGRESS_TRAFFIC_ALL",
            '"serviceAccount:${google_service_account.pubsub_push.email}"',
            "not internal",
        ),
        ("INGRESS_TRAFFIC_INTERNAL_ONLY", '"allUsers"', 'granted to "allUsers"'),
        (
            "INGRESS_TRAFFIC_INTERNAL_ONLY",
            "google_service_account.billing.member",
            "not the push service account",
        ),
    ],
)
def test_reactor_snippets_that_are_broken_are_reported(
    tmp_path: Path, ingress: str, member: str, reported: str
) -> None:
    tree = snippet(
        tmp_path, REACTOR_SNIPPET.replace('INGRESS"', f'{ingress}"').replace("MEMBER", member)
    )
    only(check_reactor_exposure(tree, SNIPPET_CATALOG, tmp_path / "c.yaml"), reported)


# Each policy bites: keys, secrets, workflow source --------------------------------------------


def test_service_account_key_is_reported(copy: Copy, tmp_path: Path) -> None:
    (copy.root / "terraform" / "modules" / "meridian" / "keys.tf").write_text(
        'resource "google_service_account_key" "ci" {\n  service_account_id = google_service_account.push.name\n}\n'
    )
    only(check_service_account_keys(copy.tree()), "google_service_account_key.ci")
    tree = snippet(tmp_path, 'data "google_service_account_key" "k" {\n  name = "x"\n}\n')
    only(check_service_account_keys(tree), "google_service_account_key.k")


@pytest.mark.parametrize(
    ("line", "reported"),
    [
        ('  password = "hunter2-correct-horse"', "password has a literal value"),
        ('api_key = "0123456789abcdef0123"', "api_key has a literal value"),
        ('  SMS_GATEWAY_TOKEN = "tok_8f7d6e5c4b3a"', "SMS_GATEWAY_TOKEN has a literal value"),
        ('  value = "AIzaSyA1234567890abcdefghijklmnopqrstuv"', "Google API key"),
        ('  key = "-----BEGIN PRIVATE KEY-----\\nMIIE"', "private key"),
        ('  url = "postgres://meridian:s3cr3t@10.0.0.5/db"', "credentials in a URL"),
    ],
)
@pytest.mark.parametrize("suffix", [".tf", ".tfvars"])
def test_secret_values_are_reported(tmp_path: Path, line: str, reported: str, suffix: str) -> None:
    path = tmp_path / f"leak{suffix}"
    path.write_text(f"{line}\n")
    only(scan_secrets([path]), reported)


def test_secret_version_with_data_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "secret.tf"
    path.write_text(
        'resource "google_secret_manager_secret_version" "sms" {\n'
        "  secret      = google_secret_manager_secret.sms.id\n  secret_data = var.sms_token\n}\n"
    )
    only(scan_secrets([path]), "secret_data")


def test_secret_references_and_names_are_not_values(tmp_path: Path) -> None:
    path = tmp_path / "ok.tf"
    path.write_text(
        '  secret = "sms-gateway-token"\n  password = var.db_password\n'
        '  token_secret_id = "sms-gateway-token"\n  api_key = "${data.x.y}"\n  password = ""\n'
    )
    assert scan_secrets([path]) == []


def test_workflow_source_elsewhere_is_reported(copy: Copy) -> None:
    copy.edit("modules/meridian/main.tf", "workflows/dispatch.yaml", "workflows/dispatch-v2.yaml")
    expected = copy.root / "workflows" / "dispatch.yaml"
    only(check_workflow_source(copy.tree(), expected), "dispatch-v2.yaml, not")


@pytest.mark.parametrize(
    ("source", "reported"),
    [
        ('source_contents = file("${path.module}/saga.yaml")', "saga.yaml, not"),
        ('source_contents = "main:\\n  steps: []"', "must be file("),
        ("source_contents = file(var.definition)", "cannot resolve"),
    ],
)
def test_workflow_snippets_with_other_sources_are_reported(
    tmp_path: Path, source: str, reported: str
) -> None:
    tree = snippet(
        tmp_path,
        f'resource "google_workflows_workflow" "dispatch" {{\n  name = "dispatch"\n  {source}\n}}\n',
    )
    only(check_workflow_source(tree, tmp_path / "workflows" / "dispatch.yaml"), reported)


def test_workflow_snippet_reading_the_right_file_is_compliant(tmp_path: Path) -> None:
    tree = snippet(
        tmp_path,
        'resource "google_workflows_workflow" "dispatch" {\n'
        '  source_contents = file("${path.module}/../workflows/dispatch.yaml")\n}\n',
    )
    assert check_workflow_source(tree, tmp_path / "workflows" / "dispatch.yaml") == []


def test_infrastructure_applies_leave_the_running_image_and_traffic_to_the_release() -> None:
    """Once a service exists, which image it runs and how traffic is split are the release's
    (a revision with no traffic, a canary, promotion or rollback): an infrastructure apply that
    changed them would move a service onto a new image behind the canary's back."""
    with (TERRAFORM / "modules" / "cloud-run-service" / "main.tf").open() as handle:
        module = hcl2.load(handle)
    (service,) = [
        r['"google_cloud_run_v2_service"']['"service"']
        for r in module["resource"]
        if '"google_cloud_run_v2_service"' in r
    ]
    (lifecycle,) = service["lifecycle"]
    ignored = {str(x).strip("${}") for x in lifecycle["ignore_changes"]}
    assert ignored == {"template[0].containers[0].image", "traffic"}
