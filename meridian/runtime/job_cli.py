"""``meridian job run NAME EVENT``: run one Cloud Run Job of the migration bridge, as its container
does in production.

Each job is a function in ``services.sync.jobs.JOBS``: it gets the encoded event the sync workflow
passes as the container's argument (``containerOverrides.args``) and the settings, does one thing
and returns its exit status. On Cloud Run the job's command is ``meridian job run NAME`` and the
workflow's override appends the event; locally the embedded Workflows engine runs this same
command as a process (``meridian.embedded.workflows.cloud_run``). A non-zero status fails the
execution, which the workflow sees as an ``OperationError``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from meridian.config import ConfigError, Settings
from meridian.domain.errors import MeridianError
from meridian.observability import get_logger

log = get_logger(__name__)

app = typer.Typer(
    help="Cloud Run Jobs of the migration bridge, run as their containers run them.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    name: Annotated[
        str,
        typer.Argument(envvar="CLOUD_RUN_JOB", help="The job, e.g. sync-shipments."),
    ],
    event: Annotated[
        str,
        typer.Argument(
            envvar="MERIDIAN_JOB_EVENT",
            help="The encoded event the job works on, as the sync workflow passes it; none for "
            "a job Cloud Scheduler starts (sync-pull).",
        ),
    ] = "",
) -> None:
    """Run job NAME on EVENT and exit with its status."""
    from services.sync.jobs import JOBS

    job = JOBS.get(name)
    if job is None:
        typer.secho(f"no job {name!r}; one of: {', '.join(sorted(JOBS))}", fg="red", err=True)
        raise typer.Exit(2)
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        typer.secho(f"configuration error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    try:
        status = job(event, settings)
    except MeridianError as e:
        typer.secho(f"{name} failed: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    if status:
        log.warning("job ended with a non-zero status", job=name, status=status)
    raise typer.Exit(status)
