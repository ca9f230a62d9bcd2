"""``meridian workflows``: start, list and show executions of the running engine over its API.

The engine runs in the platform process, so the commands find it from the same settings as
``meridian up`` (``Settings.url_of("platform")``: ``--base-port``/``MERIDIAN_BASE_PORT``,
``MERIDIAN_HOST``, ``MERIDIAN_PORT_PLATFORM``); ``--url`` names another engine. Every option also
reads an environment variable. An engine that cannot be reached is the CLI entry's one-line error
(``meridian.runtime.cli.one_line``), as is any error the engine answers.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meridian.config import Settings

from .client import WorkflowsClient

app = typer.Typer(help="Embedded Workflows executions: start, list, show.", no_args_is_help=True)
console = Console()

EngineUrl = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="MERIDIAN_WORKFLOWS_URL",
        help="The engine's HTTP API (default: the platform's URL, as `meridian up` serves it).",
        show_default=False,
    ),
]
BasePort = Annotated[
    int,
    typer.Option(
        "--base-port",
        envvar="MERIDIAN_BASE_PORT",
        help="The base port `meridian up` was given; the engine is on the platform's port.",
    ),
]


def _engine(url: str | None, base_port: int) -> WorkflowsClient:
    """The engine at ``url``, else on the platform `meridian up` runs with these settings."""
    if url is None:
        url = replace(Settings.from_env(), base_port=base_port).url_of("platform")
    return WorkflowsClient(url)


@app.command()
def start(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. dispatch.")],
    url: EngineUrl = None,
    base_port: BasePort = 8700,
    data: Annotated[
        str, typer.Option("--data", envvar="MERIDIAN_WORKFLOWS_DATA", help="Argument as JSON.")
    ] = "{}",
    execution_id: Annotated[
        str | None,
        typer.Option(
            "--execution-id",
            envvar="MERIDIAN_WORKFLOWS_EXECUTION_ID",
            help="Idempotent id: starting it again returns the same execution.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", envvar="MERIDIAN_WORKFLOWS_WAIT", help="Wait for the end.")
    ] = False,
) -> None:
    """Start an execution and print its id (and its result with --wait)."""
    try:
        argument = json.loads(data)
    except json.JSONDecodeError as e:  # a usage error: one line and 2, as the CLI's own
        typer.secho(f"--data is not JSON: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    client = _engine(url, base_port)
    execution = client.start(workflow, argument, execution_id)
    while wait and execution.state == "ACTIVE":
        time.sleep(0.2)
        execution = client.get(execution.execution_id)
    console.print(f"{execution.execution_id} {execution.state}")
    if execution.state != "ACTIVE":
        console.print_json(json.dumps({"result": execution.result, "error": execution.error}))


@app.command("list")
def list_(
    workflow: Annotated[str, typer.Argument(help="Workflow name.")],
    url: EngineUrl = None,
    base_port: BasePort = 8700,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            envvar="MERIDIAN_WORKFLOWS_STATE",
            help="Only executions in this state (ACTIVE, SUCCEEDED, FAILED, CANCELLED).",
        ),
    ] = None,
) -> None:
    """List a workflow's executions, newest first."""
    table = Table("execution", "state", "started", "ended")
    for e in _engine(url, base_port).list(workflow, state):
        table.add_row(
            e.execution_id,
            e.state,
            e.start_time.isoformat(),
            e.end_time.isoformat() if e.end_time else "",
        )
    console.print(table)


@app.command()
def show(
    execution_id: Annotated[str, typer.Argument(help="Execution id.")],
    url: EngineUrl = None,
    base_port: BasePort = 8700,
) -> None:
    """Show an execution, its result or error, and its step history."""
    client = _engine(url, base_port)
    execution = client.get(execution_id)
    steps = client.steps(execution_id)
    console.print(f"{execution.execution_id} ({execution.workflow}) {execution.state}")
    if execution.result is not None or execution.error is not None:
        console.print_json(json.dumps({"result": execution.result, "error": execution.error}))
    table = Table("#", "routine", "step", "line", "state", "detail")
    for s in steps:
        detail = json.dumps(s.get("error") or s.get("log") or "")[:80]
        table.add_row(str(s["seq"]), s["routine"], s["step"], str(s["line"]), s["state"], detail)
    console.print(table)
