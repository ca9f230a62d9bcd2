"""What the code needs from Google Cloud and terraform/ now creates (issue #19 items 4 and 6): the
POD bucket, the ETA reactor's SLA tick, webhook retries that run without traffic, the Dataflow
launch the pipeline's options expect, the edge (load balancer, Cloud Armor), Identity Platform's
tenants and the VPC Service Controls perimeter."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.reactors.eta.schedule import SLA_TICK_PATH
from tests.policy.terraform_policy import Tree, bare, load_tree, unq

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
PLATFORM = (TERRAFORM / "modules" / "meridian").resolve()
EDGE = (TERRAFORM / "modules" / "edge").resolve()
CATALOG = yaml.safe_load((REPO / "schemas" / "catalog.yaml").read_text())
METADATA = json.loads((REPO / "pipelines/geofence/flex_template/metadata.json").read_text())


@pytest.fixture(scope="module")
def tree() -> Tree:
    return load_tree(TERRAFORM)


def one(tree: Tree, rtype: str, name: str | None = None) -> dict[str, Any]:
    (block,) = [b for b in tree.of(rtype) if name is None or b.name == name]
    return block.body


def module_call(tree: Tree, name: str) -> dict[str, Any]:
    (call,) = [m for m in tree.modules() if m.name == name]
    return call.body


# Proof-of-delivery photos --------------------------------------------------------------------


def test_the_pod_bucket_is_private_and_expires_photos(tree: Tree) -> None:
    bucket = one(tree, "google_storage_bucket", "pod")
    assert bucket["uniform_bucket_level_access"] is True
    assert unq(bucket["public_access_prevention"]) == "enforced"
    actions = [unq(r["action"][0]["type"]) for r in bucket["lifecycle_rule"]]
    assert "Delete" in actions
    env = tree.locals[PLATFORM]["service_env"]
    for service in ("command", "pod"):
        assert bare(env[service]["MERIDIAN_POD_BUCKET"]) == "google_storage_bucket.pod.name"


def test_only_the_uploader_writes_and_the_pod_reactor_reads_photos(tree: Tree) -> None:
    grants = one(tree, "google_storage_bucket_iam_member", "pod")["for_each"]
    assert grants == {
        "command": {
            "member": '${module.service["command"].service_account.member}',
            "role": '"roles/storage.objectUser"',
        },
        "pod": {
            "member": '${module.reactor["pod"].service_account.member}',
            "role": '"roles/storage.objectViewer"',
        },
    }


def test_the_secrets_the_code_reads_exist_and_no_other(tree: Tree) -> None:
    secrets = tree.locals[PLATFORM]["service_secrets"]
    names = {unq(s) for table in secrets.values() for s in table.values()}
    assert names == {"billing-api-key", "routes-api-key", "sms-api-key", "tracking-secret"}
    assert bare(one(tree, "google_secret_manager_secret", "default")["for_each"]) == (
        "local.secret_ids"
    )
    # and the migration bridge's jobs' one secret, the monolith's password (sync.tf)
    (legacy,) = [b for b in tree.of("google_secret_manager_secret") if b.name != "default"]
    assert (legacy.name, unq(legacy.body["secret_id"])) == (
        "legacy_password",
        "${local.prefix}legacy-password",
    )


# The ETA reactor's SLA tick --------------------------------------------------------------------


def test_the_scheduler_calls_the_eta_sla_tick_with_an_oidc_token_for_its_url(tree: Tree) -> None:
    job = one(tree, "google_cloud_scheduler_job", "sla_tick")
    (target,) = job["http_target"]
    assert unq(target["http_method"]) == "POST"  # services/reactors/eta/app.py: @app.post
    assert unq(target["uri"]) == '${module.reactor["eta"].uri}' + SLA_TICK_PATH
    (token,) = target["oidc_token"]
    assert bare(token["service_account_email"]) == "google_service_account.scheduler.email"
    assert bare(token["audience"]) == 'module.reactor["eta"].uri'


def test_the_scheduler_may_invoke_the_eta_reactor_only(tree: Tree) -> None:
    grants = [
        b.body
        for b in tree.blocks
        if "iam" in b.type and "google_service_account.scheduler" in str(b.body.get("member"))
    ]
    assert grants == [one(tree, "google_cloud_run_v2_service_iam_member", "scheduler")]
    (grant,) = grants
    assert unq(grant["role"]) == "roles/run.invoker"
    assert bare(grant["name"]) == 'module.reactor["eta"].name'


# Client-webhook retries run without traffic ---------------------------------------------------


def test_the_client_webhook_reactor_keeps_an_instance_with_its_cpu(tree: Tree) -> None:
    assert tree.locals[PLATFORM]["background_work"] == '${toset(["client-webhook"])}'
    reactor = module_call(tree, "reactor")
    assert "contains(local.background_work, each.key) ? false" in reactor["resources"]["cpu_idle"]
    assert (
        "contains(local.background_work, each.key) ? 1 : 0" in reactor["scaling"]["min_instances"]
    )
    assert CATALOG["services"]["client-webhook"]["kind"] == "push-reactor"


# The geofence job's launch ---------------------------------------------------------------------


def launch_parameters(tree: Tree) -> dict[str, str]:
    assert (
        module_call(tree, "geofence")["parameters"]
        == "${merge(var.geofence.parameters, local.geofence_parameters)}"
    )
    return dict(tree.locals[PLATFORM]["geofence_parameters"])


def test_launch_parameters_are_the_templates_own(tree: Tree) -> None:
    declared = {p["name"] for p in METADATA["parameters"]}
    required = {p["name"] for p in METADATA["parameters"] if not p.get("isOptional")}
    parameters = launch_parameters(tree)
    # Dataflow refuses a parameter the template does not declare ("Unrecognized parameter").
    assert set(parameters) <= declared
    assert required <= set(parameters)
    assert unq(parameters["backend"]) == "gcp"
    assert unq(parameters["output_topic"]) in CATALOG["topics"]
    geofence = CATALOG["subscriptions"]["geofence"]
    assert bare(parameters["dead_letter_topic"]) == (
        'local.catalog.subscriptions["geofence"].dead_letter_topic'
    )
    assert geofence["dead_letter_topic"] in CATALOG["topics"]
    assert bare(parameters["subscription"]) == 'module.pubsub.subscriptions["geofence"]'


def test_the_pipeline_reads_the_launch_parameters_as_terraform_means_them(tree: Tree) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.geofence.pipeline import GeofenceOptions

    values = {
        "subscription": "projects/p/subscriptions/geofence",
        "dead_letter_topic": CATALOG["subscriptions"]["geofence"]["dead_letter_topic"],
    }
    parameters = {k: values.get(k, unq(v)) for k, v in launch_parameters(tree).items()}
    options = PipelineOptions([f"--{k}={v}" for k, v in parameters.items()])
    opts = options.view_as(GeofenceOptions)
    assert (opts.backend, opts.subscription) == ("gcp", "projects/p/subscriptions/geofence")
    assert (opts.output_topic, opts.dead_letter_topic) == ("logistics.events", "geofence.dlq")


def test_the_job_is_launched_streaming(tree: Tree) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from pipelines.geofence.pipeline import launch_args

    parameters = launch_parameters(tree)
    assert "streaming" in {p["name"] for p in METADATA["parameters"]}
    args = [f"--{k}={unq(v)}" for k, v in parameters.items() if k == "streaming"]
    # as the job's entry point reads the launcher's arguments before Beam does
    assert PipelineOptions(launch_args(args)).view_as(StandardOptions).streaming is True


# The edge --------------------------------------------------------------------------------------


def test_public_services_sit_behind_the_load_balancer_only(tree: Tree) -> None:
    public = {n for n, s in CATALOG["services"].items() if s.get("ingress") == "public"}
    assert public == {"command", "live-map"}
    platform = tree.locals[PLATFORM]
    assert platform["public_services"] == (
        '${{for name, s in local.front_services : name => s if try(s.ingress, "internal") == '
        '"public"}}'
    )
    service = module_call(tree, "service")
    assert service["ingress"] == (
        "${contains(keys(local.public_services), each.key) ? "
        '"INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" : "INGRESS_TRAFFIC_INTERNAL_ONLY"}'
    )
    assert service["invoker_iam_disabled"] == "${contains(keys(local.public_services), each.key)}"
    assert module_call(tree, "reactor")["ingress"] == '"INGRESS_TRAFFIC_INTERNAL_ONLY"'
    edge = module_call(tree, "edge")
    assert "keys(local.public_services)" in edge["backends"]
    assert unq(edge["default_backend"]) == "command"


def test_every_backend_is_a_serverless_neg_behind_cloud_armor(tree: Tree) -> None:
    neg = one(tree, "google_compute_region_network_endpoint_group")
    assert unq(neg["network_endpoint_type"]) == "SERVERLESS"
    backend = one(tree, "google_compute_backend_service")
    assert bare(backend["security_policy"]) == "google_compute_security_policy.edge.id"
    assert unq(backend["load_balancing_scheme"]) == "EXTERNAL_MANAGED"
    assert "google_compute_region_network_endpoint_group.default" in json.dumps(backend["backend"])
    https = one(tree, "google_compute_global_forwarding_rule", "https")
    assert unq(https["port_range"]) == "443"


def test_cloud_armor_has_the_owasp_rules_and_a_per_ip_rate_limit(tree: Tree) -> None:
    rules = tree.locals[EDGE]["waf_rules"]
    found = {
        re.search(r"evaluatePreconfiguredWaf\('(\w+)-v33-stable'", r["expression"])[1]  # type: ignore[index]
        for r in rules.values()
    }
    assert found == {"sqli", "xss", "lfi", "rce"}
    policy = one(tree, "google_compute_security_policy")
    (dynamic,) = policy["dynamic"]
    (content,) = dynamic['"rule"']["content"]
    assert unq(content["action"]).startswith("deny(")
    (throttle,) = [r for r in policy["rule"] if unq(r["action"]) in ("throttle", "rate_based_ban")]
    (limits,) = throttle["rate_limit_options"]
    assert unq(limits["enforce_on_key"]) == "IP"
    assert unq(limits["exceed_action"]) == "deny(429)"


def test_the_live_map_paths_at_the_edge_are_its_routes(tree: Tree) -> None:
    routes = set(
        re.findall(r'@app\.\w+\(\s*"([^"]+)"', (REPO / "services/live_map/app.py").read_text())
    )
    paths = [unq(p) for p in tree.locals[PLATFORM]["edge_paths"]["live-map"]]
    for path in paths:
        prefix = path.removesuffix("*")
        assert any(r == path or (path.endswith("*") and r.startswith(prefix)) for r in routes), path
    # Every public route of the live map reaches it (health checks stay inside).
    for route in routes - {"/healthz"}:
        assert any(route == p or (p.endswith("*") and route.startswith(p[:-1])) for p in paths)


# Identity Platform and the perimeter -----------------------------------------------------------


def test_identity_platform_has_tenants_for_drivers_and_customers(tree: Tree) -> None:
    config = one(tree, "google_identity_platform_config")
    assert config["multi_tenant"][0]["allow_tenants"] is True
    tenants = one(tree, "google_identity_platform_tenant")
    assert tenants["for_each"] == '${toset(["customers", "drivers"])}'
    platform = tree.locals[PLATFORM]
    assert "google_identity_platform_tenant.default" in platform["identity_tenants"]
    for service in ("command", "live-map"):
        tenant_env = platform["service_env"][service]["MERIDIAN_IDENTITY_TENANTS"]
        assert bare(tenant_env) == "local.identity_tenants"


def test_the_perimeter_guards_the_data_services_behind_a_variable(tree: Tree) -> None:
    perimeter = one(tree, "google_access_context_manager_service_perimeter")
    assert perimeter["count"] == "${var.vpc_sc == null ? 0 : 1}"
    assert sorted(unq(s) for s in tree.locals[PLATFORM]["vpc_sc_services"]) == [
        "bigquery.googleapis.com",
        "firestore.googleapis.com",
        "pubsub.googleapis.com",
        "secretmanager.googleapis.com",
    ]
    variables = tree.files[PLATFORM / "variables.tf"]["variable"]
    (vpc_sc,) = [v['"vpc_sc"'] for v in variables if '"vpc_sc"' in v]
    assert vpc_sc["default"] is None
    for env in ("dev", "staging", "prod"):
        call = [m for m in tree.modules() if m.dir.name == env and m.name == "meridian"]
        assert bare(call[0].body["vpc_sc"]) == "var.vpc_sc"


def test_no_storage_trigger_until_the_code_can_decode_one(tree: Tree) -> None:
    # POD uploads are announced by the parcel document's commit (the parcel-changes Firestore
    # trigger -> PodImageReceived); nothing decodes Cloud Storage events yet (README: follow-up).
    for trigger in tree.of("google_eventarc_trigger"):
        assert "storage" not in json.dumps(trigger.body)
