"""The migration bridge (#21) in terraform/ (modules/meridian/sync.tf), from the catalog: one Cloud
Run Job per catalog job running `meridian job run NAME` from the service image with the legacy
password from Secret Manager; the Eventarc Pub/Sub triggers of ``workflow_triggers`` start
workflows/sync.yaml; Cloud Scheduler starts each scheduled job (sync-pull) with an account that
may run those jobs only; the workflow may run the jobs with overrides and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from meridian.catalog import load_catalog
from tests.policy.terraform_policy import Tree, bare, load_tree, unq
from tests.policy.test_terraform_resources import PLATFORM, TERRAFORM, one


@pytest.fixture(scope="module")
def tree() -> Tree:
    return load_tree(TERRAFORM)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    ((task,),) = [t["template"] for t in job["template"]]
    (container,) = task["containers"]
    return dict(container, service_account=task["service_account"], vpc=task["vpc_access"])


def test_every_catalog_job_is_a_cloud_run_job_running_meridian_job_run(tree: Tree) -> None:
    assert bare(tree.locals[PLATFORM]["sync_jobs"]) == "try(local.catalog.jobs, {})"
    job = one(tree, "google_cloud_run_v2_job", "sync")
    assert bare(job["for_each"]) == "local.sync_jobs"
    container = _container(job)
    assert bare(container["image"]) == "local.image"
    assert [unq(a) for a in container["command"]] == ["meridian", "job", "run", "${each.key}"]
    assert "args" not in container  # the workflow's override supplies the event
    assert bare(container["service_account"]) == "google_service_account.sync_jobs.email"
    (password,) = [e for e in container["env"] if unq(e["name"]) == "MERIDIAN_LEGACY_PASSWORD"]
    ((source,),) = [v["secret_key_ref"] for v in password["value_source"]]
    assert bare(source["secret"]) == "google_secret_manager_secret.legacy_password.secret_id"
    assert set(load_catalog().jobs) >= {"sync-pull", "sync-identities", "sync-shipments"}


def test_the_workflow_trigger_starts_the_sync_workflow_from_the_catalog(tree: Tree) -> None:
    trigger = one(tree, "google_eventarc_trigger", "workflow")
    assert bare(trigger["for_each"]) == "local.sync_triggers"
    ((pubsub,),) = [t["pubsub"] for t in trigger["transport"]]
    assert "each.value.topic" in unq(pubsub["topic"])
    (destination,) = trigger["destination"]
    assert bare(destination["workflow"]) == "local.workflow_ids[each.value.workflow]"
    assert bare(trigger["service_account"]) == "google_service_account.eventarc.email"
    (spec,) = load_catalog().workflow_triggers.values()
    assert (spec.topic, spec.workflow) == ("sync.requests", "sync")


def test_scheduled_jobs_are_started_by_their_own_scheduler_account(tree: Tree) -> None:
    job = one(tree, "google_cloud_scheduler_job", "sync")
    assert bare(job["for_each"]) == "local.sync_scheduled_jobs"
    (target,) = job["http_target"]
    assert unq(target["uri"]).endswith(":run")
    (token,) = target["oauth_token"]
    assert bare(token["service_account_email"]) == "google_service_account.sync_scheduler.email"
    grant = one(tree, "google_cloud_run_v2_job_iam_member", "sync_scheduler")
    assert (unq(grant["role"]), bare(grant["for_each"])) == (
        "roles/run.invoker",
        "local.sync_scheduled_jobs",
    )
    assert [n for n, j in load_catalog().jobs.items() if j.schedule] == ["sync-pull"]


def test_the_workflow_may_run_the_jobs_with_overrides_only(tree: Tree) -> None:
    grant = one(tree, "google_cloud_run_v2_job_iam_member", "sync_workflow")
    assert unq(grant["role"]) == "roles/run.jobsExecutorWithOverrides"
    assert bare(grant["member"]) == "google_service_account.sync_workflow.member"
