"""The nightly reconciliation (#22 item 6) in terraform/: a Cloud Run Job runs `meridian reconcile`
from the service image with the gcp backend, read-only on Firestore and BigQuery, and Cloud
Scheduler runs it nightly with an OAuth token of an account that may run this job only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.policy.terraform_policy import Tree, bare, load_tree, unq
from tests.policy.test_terraform_resources import PLATFORM, TERRAFORM, one


@pytest.fixture(scope="module")
def tree() -> Tree:
    return load_tree(TERRAFORM)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    ((task,),) = [t["template"] for t in job["template"]]
    (container,) = task["containers"]
    return dict(container, service_account=task["service_account"])


def test_the_job_runs_meridian_reconcile_from_the_service_image(tree: Tree) -> None:
    container = _container(one(tree, "google_cloud_run_v2_job", "reconcile"))
    assert bare(container["image"]) == "local.image"
    assert [unq(a) for a in container["command"]] == ["meridian"]
    assert [unq(a) for a in container["args"]] == ["reconcile"]
    (env,) = container["dynamic"]
    assert bare(env['"env"']["for_each"]) == "local.common_env"  # MERIDIAN_BACKEND=gcp, the project
    assert bare(container["service_account"]) == "google_service_account.reconcile.email"


def test_the_job_reads_and_writes_nothing(tree: Tree) -> None:
    roles = [unq(r) for r in tree.locals[PLATFORM]["reconcile_roles"]]
    assert "roles/datastore.viewer" in roles and "roles/bigquery.dataViewer" in roles
    assert not any(r.endswith((".user", ".editor", ".admin", ".dataEditor")) for r in roles)


def test_the_scheduler_runs_the_job_nightly_with_its_own_account(tree: Tree) -> None:
    job = one(tree, "google_cloud_scheduler_job", "reconcile")
    assert bare(job["schedule"]) == "local.reconcile_schedule"
    assert len(unq(tree.locals[PLATFORM]["reconcile_schedule"]).split()) == 5  # once a day
    (target,) = job["http_target"]
    assert unq(target["http_method"]) == "POST"
    assert unq(target["uri"]).endswith("${google_cloud_run_v2_job.reconcile.name}:run")
    (token,) = target["oauth_token"]
    email = bare(token["service_account_email"])
    assert email == "google_service_account.reconcile_scheduler.email"
    grants = [
        b.body
        for b in tree.blocks
        if "iam" in b.type
        and "google_service_account.reconcile_scheduler" in str(b.body.get("member"))
    ]
    assert grants == [one(tree, "google_cloud_run_v2_job_iam_member", "reconcile_scheduler")]
    assert unq(grants[0]["role"]) == "roles/run.invoker"
