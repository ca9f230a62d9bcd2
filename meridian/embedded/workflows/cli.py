"""``meridian workflows``: start, list and show executions of the running engine over its API.
Every option also reads an environment variable."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meridian.domain.errors import MeridianError

from .client import WorkflowsClient

app = typer.Typer(help="Embedded Workflows executions: start, list, show.", no_args_is_help=True)
console = Console()

EngineUrl = Annotated[
    str,
    typer.Option("--url", envvar="MERIDIAN_WORKFLOWS_URL", help="The workflows engine's HTTP API."),
]


@app.command()
def start(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. dispatch.")],
    url: EngineUrl = "http://127.0.0.1:8790",
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
    client = WorkflowsClient(url)
    try:
        execution = client.start(workflow, json.loads(data), execution_id)
        while wait and execution.state == "ACTIVE":
            time.sleep(0.2)
            execution = client.get(execution.execution_id)
    except MeridianError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    console.print(f"{execution.execution_id} {execution.state}")
    if execution.state != "ACTIVE":
        console.print_json(json.dumps({"result": execution.result, "error": execution.error}))


@app.command("list")
def list_(
    workflow: Annotated[str, typer.Argument(help="Workflow name.")],
    url: EngineUrl = "http://127.0.0.1:8790",
    state: Annotated[
        str | None, typer.Option("--state", envvar="MERIDIAN_WORKFLOWS_STATE", help="Filter.")
    ] = None,
) -> None:
    """List a workflow's executions, newest first."""
    table = Table("execution", "state", "started", "ended")
    for e in WorkflowsClient(url).list(workflow, state):
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
    url: EngineUrl = "http://127.0.0.1:8790",
) -> None:
    """Show an execution, its result or error, and its step history."""
    client = WorkflowsClient(url)
    try:
        execution = client.get(execution_id)
        steps = client.steps(execution_id)
    except MeridianError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    console.print(f"{execution.execution_id} ({execution.workflow}) {execution.state}")
    if execution.result is not None or execution.error is not None:
        console.print_json(json.dumps({"result": execution.result, "error": execution.error}))
    table = Table("#", "routine", "step", "line", "state", "detail")
    for s in steps:
        detail = json.dumps(s.get("error") or s.get("log") or "")[:80]
        table.add_row(str(s["seq"]), s["routine"], s["step"], str(s["line"]), s["state"], detail)
    console.print(table)
