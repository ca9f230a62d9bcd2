"""The dispatch schedules' Cloud Scheduler job (terraform/modules/meridian/schedules.tf) is what
the command service's fire endpoint accepts: one job, every minute, POST to the fire path, with an
OIDC token of the scheduler account for the audience the endpoint checks; and the command service,
public and so behind no IAM check, is given the keys to verify that token with."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.command.routes.schedules import FIRE_AUDIENCE, FIRE_PATH
from tests.policy.terraform_policy import Tree, bare, load_tree, unq
from tests.policy.test_terraform_env_parity import terraform_env

TERRAFORM = Path(__file__).resolve().parents[2] / "terraform"


@pytest.fixture(scope="module")
def tree() -> Tree:
    return load_tree(TERRAFORM)


def test_one_job_fires_the_dispatch_schedules_every_minute_as_the_scheduler(tree: Tree) -> None:
    jobs = [
        job
        for job in tree.of("google_cloud_scheduler_job")
        if any(FIRE_PATH in str(t.get("uri", "")) for t in job.body.get("http_target", []))
    ]
    assert [job.name for job in jobs] == ["dispatch_schedules"]
    (job,) = jobs
    assert unq(job.body["schedule"]) == "* * * * *"
    (target,) = job.body["http_target"]
    assert unq(target["http_method"]) == "POST"
    assert unq(target["uri"]) == f'${{module.service["command"].uri}}{FIRE_PATH}'
    (token,) = target["oidc_token"]
    assert bare(token["service_account_email"]) == "google_service_account.scheduler.email"
    assert unq(token["audience"]) == FIRE_AUDIENCE


def test_the_command_service_verifies_the_schedulers_token_itself(tree: Tree) -> None:
    plain, _ = terraform_env(tree, "command")
    assert bare(plain["MERIDIAN_SCHEDULER_IDENTITY"]) == "google_service_account.scheduler.email"
    assert unq(plain["MERIDIAN_PUSH_CERTS_URL"]) == "https://www.googleapis.com/oauth2/v3/certs"
