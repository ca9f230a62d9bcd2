"""What `meridian release apply` runs for a plan (meridian/release/steps.py): the commands, in
order, a rollback when a canary fails, and the same steps as a Cloud Build config."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import yaml

from meridian.release.deployables import Deployable
from meridian.release.plan import Plan, Release
from meridian.release.steps import ReleaseFailed, Target, cloudbuild, run_steps, shell, steps_for

TARGET = Target(
    environment="prod",
    project="meridian-prod",
    region="europe-west1",
    prefix="mrd-prod",
    version="v1.4.0",
    image="europe-west1-docker.pkg.dev/meridian-dev/mrd-dev-images/meridian@sha256:abc",
)
PLAN = Plan(
    base="prod-v1.3.0",
    head="v1.4.0",
    releases=(
        Release(Deployable("schemas", "schemas"), ("schemas/avro/Thing.avsc",)),
        Release(Deployable("service", "eta"), ("services/reactors/eta/board.py",)),
        Release(Deployable("workflow", "workflow:dispatch"), ("workflows/dispatch.yaml",)),
        Release(
            Deployable("infrastructure", "infrastructure:dev"), ("terraform/environments/dev/x.tf",)
        ),
        Release(Deployable("infrastructure", "infrastructure:prod"), ("terraform/modules/x.tf",)),
    ),
)
REPO = "europe-west1-docker.pkg.dev/meridian-prod/mrd-prod-images"
TF = "terraform -chdir=terraform/environments/prod"


def test_the_commands_of_a_plan_in_order() -> None:
    steps = steps_for(PLAN, TARGET)
    assert [s.deployable for s in steps] == [
        "images",
        "terraform",
        "schemas",
        "eta",
        "workflow:dispatch",
        "infrastructure:prod",
    ]
    assert [shell(c) for s in steps for c in s.commands] == [
        f"gcloud container images add-tag --quiet {TARGET.image} {REPO}/meridian:v1.4.0",
        f"{TF} init -input=false -backend-config=bucket=meridian-prod-tfstate",
        f"{TF} apply -input=false -auto-approve -var=image_tag=v1.4.0 -target=module.meridian.module.pubsub",
        f"gcloud run deploy mrd-prod-eta --image={REPO}/meridian:v1.4.0 --region=europe-west1 "
        "--project=meridian-prod --no-traffic --tag=v1-4-0 --quiet",
        "gcloud run services update-traffic mrd-prod-eta --region=europe-west1 --project=meridian-prod "
        "--to-tags=v1-4-0=5",
        "meridian release canary --service=eta --tag=v1-4-0 --environment=prod --prefix=mrd-prod "
        "--region=europe-west1 --project=meridian-prod",
        "gcloud run services update-traffic mrd-prod-eta --region=europe-west1 --project=meridian-prod "
        "--to-tags=v1-4-0=100",
        f"{TF} apply -input=false -auto-approve -var=image_tag=v1.4.0 "
        "-target=module.meridian.module.dispatch_workflow",
        f"{TF} apply -input=false -auto-approve -var=image_tag=v1.4.0",
    ]


def test_an_empty_plan_runs_nothing() -> None:
    assert steps_for(Plan(base="v1", head="v2", releases=()), TARGET) == []


def test_a_failed_canary_rolls_back_and_fails_the_release() -> None:
    ran: list[str] = []

    def execute(argv: Sequence[str]) -> int:
        ran.append(shell(argv))
        return 1 if argv[:3] == ("meridian", "release", "canary") else 0

    with pytest.raises(ReleaseFailed, match="eta: meridian release canary"):
        run_steps(steps_for(PLAN, TARGET), execute=execute, report=lambda line: None)
    assert ran[-1].endswith(
        "mrd-prod-eta --region=europe-west1 --project=meridian-prod --to-tags=v1-4-0=0"
    )
    assert not any("dispatch_workflow" in c or "--to-tags=v1-4-0=100" in c for c in ran)


def test_the_cloud_build_config_runs_the_same_steps() -> None:
    config = yaml.safe_load(cloudbuild(steps_for(PLAN, TARGET)))
    assert [s["id"] for s in config["steps"]] == [s.deployable for s in steps_for(PLAN, TARGET)]
    eta = config["steps"][3]["args"][1]
    assert "--to-tags=v1-4-0=5 && meridian release canary" in eta
    assert eta.endswith("--to-tags=v1-4-0=0; exit 1; }")
