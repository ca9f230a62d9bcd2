"""``meridian release``: plan a release, check its schemas, apply it to an environment behind
canaries, or print it as commands or a Cloud Build config. The logic is meridian/release/; this
module parses options and is the one place the canary's Cloud Monitoring adapter is built.
Every option also reads an environment variable."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meridian.domain.errors import CatalogError
from meridian.release.canary import Decision, Verdict, load_slos, watch
from meridian.release.git import GitError, Repository
from meridian.release.plan import Plan, plan_release
from meridian.release.schema_gate import BreakingSchemaChange
from meridian.release.steps import ReleaseFailed, Target, cloudbuild, run_steps, shell, steps_for

app = typer.Typer(
    help="Release: which deployables a tag changes, and deploying them behind canaries.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

RepoPath = Annotated[
    Path, typer.Option("--repo", envvar="MERIDIAN_RELEASE_REPO", help="The git checkout.")
]
From = Annotated[
    str | None,
    typer.Option(
        "--from",
        envvar="MERIDIAN_RELEASE_FROM",
        help="Last release (default: the previous v* tag, or ENV-v* with --environment).",
    ),
]
To = Annotated[str, typer.Option("--to", envvar="MERIDIAN_RELEASE_TO", help="What to release.")]
Environment = Annotated[
    str | None,
    typer.Option(
        "--environment", envvar="MERIDIAN_RELEASE_ENVIRONMENT", help="dev, staging or prod."
    ),
]
PlanFile = Annotated[
    Path | None,
    typer.Option("--plan", envvar="MERIDIAN_RELEASE_PLAN", help="A plan from `plan --json`."),
]
Project = Annotated[
    str,
    typer.Option(
        "--project",
        envvar="MERIDIAN_RELEASE_PROJECT",
        help="The environment's Google Cloud project.",
    ),
]
Region = Annotated[
    str,
    typer.Option(
        "--region", envvar="MERIDIAN_RELEASE_REGION", help="Its region, e.g. us-central1."
    ),
]
Prefix = Annotated[
    str, typer.Option("--prefix", envvar="MERIDIAN_RELEASE_PREFIX", help="Terraform's prefix.")
]
Version = Annotated[
    str, typer.Option("--version", envvar="MERIDIAN_RELEASE_VERSION", help="The tag, e.g. v1.4.0.")
]
Image = Annotated[
    str,
    typer.Option("--image", envvar="MERIDIAN_RELEASE_IMAGE", help="The built image, by digest."),
]
FlexImage = Annotated[
    str | None,
    typer.Option(
        "--flex-image", envvar="MERIDIAN_RELEASE_FLEX_IMAGE", help="The geofence job's image."
    ),
]


def _plan(repo: Path, base: str | None, head: str, environment: str | None) -> Plan:
    """The plan, or exit 1 naming what broke (a schema change, a catalog, git)."""
    repository = Repository(repo)
    try:
        if base is None:
            pattern = f"{environment}-v*" if environment else "v*"
            base = repository.previous_tag(head, pattern)
        return plan_release(repository, base, head)
    except BreakingSchemaChange as e:
        errors.print(f"[red]schema gate:[/] {e}")
    except (CatalogError, GitError) as e:
        errors.print(f"[red]release plan:[/] {e}")
    raise typer.Exit(1)


@app.command("plan")
def plan_command(
    base: From = None,
    head: To = "HEAD",
    environment: Environment = None,
    as_json: Annotated[
        bool, typer.Option("--json", envvar="MERIDIAN_RELEASE_JSON", help="Print JSON.")
    ] = False,
    repo: RepoPath = Path("."),
) -> None:
    """Which deployables change from the last release to --to, and the paths that cause each."""
    plan = _plan(repo, base, head, environment)
    if as_json:
        typer.echo(plan.dumps())
        return
    table = Table(title=f"Release plan {plan.base or '(first release)'} → {plan.head}")
    for column in ("deployable", "kind", "because"):
        table.add_column(column)
    for release in plan.releases:
        table.add_row(release.deployable.name, release.deployable.kind, "\n".join(release.because))
    console.print(table if plan.releases else "Nothing to release.")
    if plan.unreleased:
        console.print(
            f"[dim]{len(plan.unreleased)} changed paths release nothing (--json lists them)[/]"
        )


def _target_plan(
    repo: Path, plan_file: Path | None, base: str | None, head: str, environment: str
) -> Plan:
    if plan_file is not None:
        return Plan.from_json(json.loads(plan_file.read_text()))
    return _plan(repo, base, head, environment)


@app.command("apply")
def apply_command(
    environment: Annotated[
        str,
        typer.Option(
            "--environment",
            envvar="MERIDIAN_RELEASE_ENVIRONMENT",
            help="The environment released into: dev, staging or prod.",
        ),
    ],
    project: Project,
    region: Region,
    prefix: Prefix,
    version: Version,
    image: Image,
    flex_image: FlexImage = None,
    plan_file: PlanFile = None,
    base: From = None,
    head: To = "HEAD",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", envvar="MERIDIAN_RELEASE_DRY_RUN", help="Print, run nothing."),
    ] = False,
    repo: RepoPath = Path("."),
) -> None:
    """Release a plan into one environment: each step's gcloud/terraform commands, in order; a
    service behind a 5% canary, promoted or rolled back."""
    plan = _target_plan(repo, plan_file, base, head, environment)
    target = Target(environment, project, region, prefix, version, image, flex_image)
    steps = steps_for(plan, target)
    if dry_run:
        for step in steps:
            typer.echo(f"# {step.deployable}")
            for command in step.commands:
                typer.echo(shell(command))
            for command in step.rollback:
                typer.echo(f"# on failure: {shell(command)}")
        return
    try:
        run_steps(steps, report=lambda line: errors.print(line, highlight=False))
    except ReleaseFailed as e:
        errors.print(f"[red]release failed:[/] {e}")
        raise typer.Exit(1) from None


@app.command("cloudbuild")
def cloudbuild_command(
    environment: Annotated[
        str,
        typer.Option(
            "--environment",
            envvar="MERIDIAN_RELEASE_ENVIRONMENT",
            help="The environment released into: dev, staging or prod.",
        ),
    ],
    project: Project,
    region: Region,
    prefix: Prefix,
    version: Version,
    image: Image,
    flex_image: FlexImage = None,
    plan_file: PlanFile = None,
    base: From = None,
    head: To = "HEAD",
    repo: RepoPath = Path("."),
) -> None:
    """The same steps as a Cloud Build config (YAML on stdout)."""
    plan = _target_plan(repo, plan_file, base, head, environment)
    target = Target(environment, project, region, prefix, version, image, flex_image)
    typer.echo(cloudbuild(steps_for(plan, target)), nl=False)


@app.command("canary")
def canary_command(
    service: Annotated[
        str, typer.Option("--service", envvar="MERIDIAN_RELEASE_SERVICE", help="Catalog name.")
    ],
    tag: Annotated[str, typer.Option("--tag", envvar="MERIDIAN_RELEASE_TAG", help="Traffic tag.")],
    environment: Annotated[
        str,
        typer.Option(
            "--environment",
            envvar="MERIDIAN_RELEASE_ENVIRONMENT",
            help="The environment released into: dev, staging or prod.",
        ),
    ],
    prefix: Prefix,
    project: Project,
    region: Region,
) -> None:
    """Watch the revision tagged --tag against the SLOs (meridian/release/slos.yaml) for the soak:
    exit 0 to promote it, 1 to roll it back."""
    from meridian.gcp.monitoring import CloudMonitoringMetrics

    slo, soak = load_slos(environment, service)
    metrics = CloudMonitoringMetrics.from_default_credentials(project, region)

    def report(decision: Decision) -> None:
        errors.print(f"[{service}] {decision.verdict.value}: {decision.reason}", highlight=False)

    decision = watch(metrics, f"{prefix}-{service}", tag, slo, soak, report=report)
    sys.exit(0 if decision.verdict is Verdict.PROMOTE else 1)
