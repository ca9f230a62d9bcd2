"""What releasing a plan to one environment runs: the exact ``gcloud`` and ``terraform`` commands,
in order, with what undoes each step. ``meridian release apply`` runs them (``--dry-run`` prints
them), the GitHub release workflow calls that command, and ``meridian release cloudbuild`` turns
the same steps into a Cloud Build config: the logic lives here once.

Names follow terraform/: Cloud Run services ``PREFIX-NAME``, the image repository
``REGION-docker.pkg.dev/PROJECT/PREFIX-images``, the state bucket ``PROJECT-tfstate``, the
geofence job's bucket ``PREFIX-PROJECT-geofence-pipeline``. One image is built per release
(``--image``, by digest) and tagged into each environment's repository as ``VERSION``: promotion
copies the same digest, never rebuilds.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from meridian.release.plan import Plan

CANARY_PERCENT = 5
FLEX_METADATA = "pipelines/geofence/flex_template/metadata.json"


@dataclass(frozen=True)
class Target:
    """One environment to release into, and the release's version and built images."""

    environment: str
    project: str
    region: str
    prefix: str
    version: str  # the release tag, e.g. v1.4.0
    image: str  # the service image as built, by digest: REPO/meridian@sha256:...
    flex_image: str | None = None  # the geofence job's image as built, when it changed

    @property
    def repository(self) -> str:
        return f"{self.region}-docker.pkg.dev/{self.project}/{self.prefix}-images"

    @property
    def revision_tag(self) -> str:
        """The version as a Cloud Run traffic tag: lower-case letters, digits and dashes."""
        tag = re.sub(r"[^a-z0-9]+", "-", self.version.lower()).strip("-")
        return tag if tag[:1].isalpha() else f"r-{tag}"

    @property
    def terraform_root(self) -> str:
        return f"terraform/environments/{self.environment}"


@dataclass(frozen=True)
class Step:
    deployable: str
    commands: tuple[tuple[str, ...], ...]
    rollback: tuple[tuple[str, ...], ...] = ()  # run when a command of the step fails


class ReleaseFailed(Exception):
    """A step failed (and its rollback ran); names the step and the command."""


def steps_for(plan: Plan, target: Target) -> list[Step]:
    """The steps that release ``plan`` into ``target``'s environment, in the plan's order."""
    if not plan.releases:
        return []
    kinds = {r.deployable.kind for r in plan.releases}
    env = target.environment
    steps = [_images(target, with_flex="pipeline" in kinds)]
    if kinds & {"schemas", "pipeline", "workflow", "infrastructure"}:
        steps.append(Step("terraform", (_terraform(target, "init"),)))
    for release in plan.releases:
        deployable = release.deployable
        match deployable.kind:
            case "schemas":
                steps.append(_apply(target, deployable.name, "module.meridian.module.pubsub"))
            case "service":
                steps.append(_canary(target, deployable.name))
            case "pipeline":
                steps.append(_pipeline(target, deployable.name))
            case "workflow":
                name = deployable.name.removeprefix("workflow:")
                steps.append(
                    _apply(target, deployable.name, f"module.meridian.module.{name}_workflow")
                )
            case "infrastructure" if deployable.name == f"infrastructure:{env}":
                extra = _template_var(target) if "pipeline" in kinds else ()
                steps.append(_apply(target, deployable.name, None, *extra))
    return steps


def _images(target: Target, *, with_flex: bool) -> Step:
    """The release's images, by digest, tagged VERSION in the environment's repository."""
    copies = [("meridian", target.image)]
    if with_flex and target.flex_image:
        copies.append(("geofence-pipeline", target.flex_image))
    return Step(
        "images",
        tuple(
            (
                "gcloud",
                "container",
                "images",
                "add-tag",
                "--quiet",
                source,
                f"{target.repository}/{name}:{target.version}",
            )
            for name, source in copies
        ),
    )


def _where(target: Target) -> tuple[str, ...]:
    return (f"--region={target.region}", f"--project={target.project}")


def _canary(target: Target, service: str) -> Step:
    name, tag = f"{target.prefix}-{service}", target.revision_tag
    traffic = ("gcloud", "run", "services", "update-traffic", name, *_where(target))
    return Step(
        service,
        (
            (
                "gcloud",
                "run",
                "deploy",
                name,
                f"--image={target.repository}/meridian:{target.version}",
                *_where(target),
                "--no-traffic",
                f"--tag={tag}",
                "--quiet",
            ),
            (*traffic, f"--to-tags={tag}={CANARY_PERCENT}"),
            (
                "meridian",
                "release",
                "canary",
                f"--service={service}",
                f"--tag={tag}",
                f"--environment={target.environment}",
                f"--prefix={target.prefix}",
                *_where(target),
            ),
            (*traffic, f"--to-tags={tag}=100"),
        ),
        # The tag's share back to 0: Cloud Run hands it to the revisions that served before.
        rollback=((*traffic, f"--to-tags={tag}=0"),),
    )


def _pipeline(target: Target, name: str) -> Step:
    bucket = f"{target.prefix}-{target.project}-{name}"
    return Step(
        name,
        (
            (
                "gcloud",
                "dataflow",
                "flex-template",
                "build",
                f"gs://{bucket}/templates/{name}-{target.version}.json",
                f"--image={target.repository}/{name}:{target.version}",
                "--sdk-language=PYTHON",
                f"--metadata-file={FLEX_METADATA}",
                f"--project={target.project}",
            ),
            _terraform(
                target, "apply", "-target=module.meridian.module.geofence", *_template_var(target)
            ),
        ),
    )


def _template_var(target: Target) -> tuple[str, ...]:
    return (f"-var=geofence_template_version={target.version}",)


def _apply(target: Target, deployable: str, module: str | None, *extra: str) -> Step:
    scope = (f"-target={module}",) if module else ()
    return Step(deployable, (_terraform(target, "apply", *scope, *extra),))


def _terraform(target: Target, action: str, *args: str) -> tuple[str, ...]:
    base = ("terraform", f"-chdir={target.terraform_root}", action, "-input=false")
    if action == "init":
        return (*base, f"-backend-config=bucket={target.project}-tfstate")
    return (*base, "-auto-approve", f"-var=image_tag={target.version}", *args)


def shell(command: Sequence[str]) -> str:
    return shlex.join(command)


def run_steps(
    steps: Sequence[Step],
    execute: Callable[[Sequence[str]], int] = lambda argv: (
        subprocess.run(argv, check=False).returncode
    ),
    report: Callable[[str], None] = print,
) -> None:
    """Run each step's commands in order; on a failure, its rollback, then raise ReleaseFailed."""
    for step in steps:
        for command in step.commands:
            report(f"[{step.deployable}] $ {shell(command)}")
            if execute(command) != 0:
                for undo in step.rollback:
                    report(f"[{step.deployable}] rolling back: $ {shell(undo)}")
                    execute(undo)
                raise ReleaseFailed(f"{step.deployable}: {shell(command)} failed")


def cloudbuild(steps: Sequence[Step], builder: str = "${_BUILDER}") -> str:
    """A Cloud Build config running the same steps, one build step each, waiting for the one
    before; ``builder`` is an image with gcloud, terraform and meridian (substitution
    ``_BUILDER``), run on the release's checkout (the build's source)."""
    build_steps = []
    for step in steps:
        script = " && ".join(shell(c) for c in step.commands)
        if step.rollback:
            undo = "; ".join(shell(c) for c in step.rollback)
            script = f"{script} || {{ {undo}; exit 1; }}"
        build_steps.append(
            {"id": step.deployable, "name": builder, "entrypoint": "bash", "args": ["-ceu", script]}
        )
    config = {
        "steps": build_steps,
        "timeout": f"{3600 + 1800 * len(steps)}s",
        "options": {"logging": "CLOUD_LOGGING_ONLY"},
    }
    return yaml.safe_dump(config, sort_keys=False, width=1000)
