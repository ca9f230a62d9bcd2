"""The ``meridian`` command. Every option also reads an environment variable and has help text
(tests/unit/test_cli_help.py). A connection or usage error ends as one line on stderr and a
non-zero exit, never a traceback (``MeridianCli``): 2 for a usage error (a wrong option, a broken
catalog or variable), 1 for a failure (the platform unreachable, a refused operation)."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from meridian.catalog import BigQueryDelivery, PushDelivery, load_catalog
from meridian.config import ConfigError, Settings, environment
from meridian.domain.errors import CatalogError, MeridianError, NotFound
from meridian.ports import ReceivedMessage
from meridian.runtime.supervisor import ServiceProcess, StopSignals, Supervisor


def one_line(error: Exception) -> tuple[str, int] | None:
    """What the CLI says, and its exit status, for an error a user can act on; None for a bug
    (its traceback is shown)."""
    cause = error if isinstance(error, httpx.ConnectError) else error.__cause__
    if isinstance(cause, httpx.ConnectError):
        try:
            url = cause.request.url
            where = f"{url.scheme}://{url.netloc.decode()}"
        except RuntimeError:  # raised without a request
            where = "its address"
        return f"cannot reach the platform at {where}: is `meridian up` running?", 1
    if isinstance(error, ConfigError):
        return str(error), 2
    if isinstance(error, MeridianError):
        return str(error), 1
    return None


class MeridianCli(typer.Typer):
    """The app whose call is the CLI's entry (``meridian`` and ``python -m meridian.runtime.cli``):
    errors ``one_line`` knows end as their line on stderr and their exit status."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as e:
            said = one_line(e)
            if said is None:
                raise
            typer.secho(said[0], fg="red", err=True)
            sys.exit(said[1])


def refuse(message: str) -> NoReturn:
    """A usage error: one line on stderr and exit status 2."""
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(2)


app = MeridianCli(
    help="Meridian: event-driven last-mile logistics, on Google Cloud or embedded.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"meridian {version('meridian')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("meridian (not installed: no version)")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    """Meridian: event-driven last-mile logistics, on Google Cloud or embedded."""


CatalogPath = Annotated[
    Path | None, typer.Option("--catalog", envvar="MERIDIAN_CATALOG", help="Event catalog file.")
]
DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="MERIDIAN_DATA_DIR", help="Where the embedded runtime keeps its state."
    ),
]
Host = Annotated[
    str, typer.Option("--host", envvar="MERIDIAN_HOST", help="Address services bind to.")
]
BasePort = Annotated[
    int,
    typer.Option(
        "--base-port",
        envvar="MERIDIAN_BASE_PORT",
        help="First port; each service has a fixed offset from it.",
    ),
]
Only = Annotated[
    str,
    typer.Option(
        "--services",
        envvar="MERIDIAN_SERVICES",
        help="Comma-separated services to run (default: all).",
    ),
]
Duration = Annotated[
    float,
    typer.Option(
        "--duration",
        envvar="MERIDIAN_DURATION",
        help="Stop after this many seconds (0: run until Ctrl-C).",
    ),
]


@app.command()
def catalog(path: CatalogPath = None) -> None:
    """Print the topics, event types and subscriptions of the event catalog."""
    try:
        cat = load_catalog(path)
    except CatalogError as e:
        refuse(f"catalog error: {e}")
    topics = Table(title="Topics")
    for column in ("topic", "retention", "event types"):
        topics.add_column(column)
    for name, topic in cat.topics.items():
        topics.add_row(
            name, f"{topic.message_retention / 86400:g} d", ", ".join(cat.event_types_on(name))
        )
    types = Table(title="Event types")
    for column in ("event type", "v", "producer", "topic", "ordering key", "schema"):
        types.add_column(column)
    for name, spec in cat.event_types.items():
        types.add_row(
            name,
            str(spec.version),
            spec.producer,
            spec.topic,
            spec.ordering_key or "-",
            spec.schema_file,
        )
    subs = Table(title="Subscriptions")
    for column in ("subscription", "topic", "delivery", "filter", "dead letters", "ack", "ordered"):
        subs.add_column(column)
    for name, sub in cat.subscriptions.items():
        delivery = sub.delivery
        route = (
            f"push → {delivery.service}{delivery.path}"
            if isinstance(delivery, PushDelivery)
            else f"bigquery → {delivery.table}"
            if isinstance(delivery, BigQueryDelivery)
            else f"pull ({delivery.consumer})"
        )
        dlq = (
            f"{sub.dead_letter_topic} after {sub.max_delivery_attempts or 5}"
            if sub.dead_letter_topic
            else "-"
        )
        subs.add_row(
            name,
            sub.topic,
            route,
            sub.filter or "(all)",
            dlq,
            f"{sub.ack_deadline_seconds}s",
            "yes" if sub.ordering else "no",
        )
    console.print(topics, types, subs)


def _settings(data_dir: Path, host: str, base_port: int) -> Settings:
    """The environment's settings with the command's options (which read their variables too)."""
    return replace(Settings.from_env(), data_dir=data_dir, host=host, base_port=base_port)


@app.command()
def up(
    data_dir: DataDir = Path(".meridian"),
    host: Host = "127.0.0.1",
    base_port: BasePort = 8700,
    duration: Duration = 0,
    services: Only = "",
) -> None:
    """Start the embedded runtime: every service as its own process. Ctrl-C stops them all."""
    from meridian.runtime.supervisor import StopRequested, run_until, runnable_services

    settings = _settings(data_dir, host, base_port)
    supervisor = Supervisor(
        settings, _chosen(runnable_services(load_catalog(), settings), services), data_dir / "logs"
    )
    reason = "start-up failed"
    with StopSignals() as signals:
        try:
            _start(supervisor, settings, signals)
            reason = run_until(supervisor, signals, duration or None)
        except StopRequested as stop:
            reason = str(stop)
        finally:
            console.print(f"stopping ({reason})")
            _stop(supervisor)
    console.print("all services stopped")


def _chosen(available: list[ServiceProcess], only: str) -> list[ServiceProcess]:
    """The services named in ``only`` (all when empty), each with all its processes (the live
    map's writer with the live map); the platform always runs."""
    names = {n.strip() for n in only.split(",") if n.strip()}
    unknown = {n for n in names if not any(s.belongs_to(n) for s in available)}
    if unknown:
        refuse(f"unknown service(s): {', '.join(sorted(unknown))}")
    return [
        s
        for s in available
        if not names or any(s.belongs_to(n) for n in names) or s.name == "platform"
    ]


def _start(supervisor: Supervisor, settings: Settings, signals: StopSignals) -> None:
    from meridian.runtime.platform import prepare_data_dir

    prepare_data_dir(load_catalog(), settings)
    supervisor.start()
    supervisor.wait_healthy(signals=signals)
    table = Table(title=f"Meridian embedded runtime (data in {settings.data_dir})")
    table.add_column("service")
    table.add_column("url")
    table.add_column("pid", justify="right")
    pids = supervisor.pids()
    for service in supervisor.services:
        url = f"http://{settings.host}:{service.port}" if service.port else "-"
        table.add_row(service.name, url, str(pids[service.name]))
    console.print(table)


def _stop(supervisor: Supervisor) -> dict[str, str]:
    """Stop every child; describe how each ended (SIGTERM is the normal way for a server to end)."""
    codes = supervisor.stop()
    return {
        name: "stopped" if code in (0, -signal.SIGTERM) else f"exit {code}"
        for name, code in codes.items()
    }


@app.command()
def demo(
    data_dir: DataDir = Path(".meridian"),
    host: Host = "127.0.0.1",
    base_port: BasePort = 8700,
    duration: Duration = 45,
    parcels: Annotated[
        int,
        typer.Option(
            envvar="MERIDIAN_DEMO_PARCELS",
            min=1,
            max=500,
            help="Parcels in the scenario's shipment.",
        ),
    ] = 9,
) -> None:
    """`up` plus a delivery day told step by step, ending with a summary per reactor (after
    --duration seconds)."""
    from meridian.runtime.demo import run_scenario, service_environment
    from meridian.runtime.demo_report import print_summary
    from meridian.runtime.supervisor import StopRequested, run_until, runnable_services

    started = time.monotonic()
    settings = _settings(data_dir, host, base_port)
    cat = load_catalog()
    extra = service_environment(environment())
    services = [replace(s, env={**extra, **s.env}) for s in runnable_services(cat, settings)]
    supervisor = Supervisor(settings, services, data_dir / "logs")
    report, reason = None, "start-up failed"
    with StopSignals() as signals:
        try:
            _start(supervisor, settings, signals)
            budget = max(1.0, (duration or 60) - (time.monotonic() - started) - 3)
            report = run_scenario(
                cat,
                settings,
                seconds=budget,
                started=started,
                console=console,
                parcel_count=parcels,
                interrupted=lambda: bool(signals.reason),
            )
            remaining = duration - (time.monotonic() - started) - 2 if duration else None
            reason = (
                run_until(supervisor, signals, remaining)
                if remaining is None or remaining > 0
                else "done"
            )
        except StopRequested as stop:
            reason = str(stop)
        finally:
            console.print(f"stopping ({reason})")
            ended = _stop(supervisor)
    if report is not None:
        print_summary(report, console)
    console.print(
        f"[green]demo finished[/] in {time.monotonic() - started:.1f} s; "
        f"services: {', '.join(f'{k} {v}' for k, v in ended.items())}"
    )


@app.command()
def token(
    role: Annotated[
        str, typer.Option(envvar="MERIDIAN_TOKEN_ROLE", help="driver, dispatcher or gateway")
    ],
    sub: Annotated[
        str, typer.Option(envvar="MERIDIAN_TOKEN_SUB", help="the driver, dispatcher or gateway id")
    ],
    ttl: Annotated[
        float, typer.Option(envvar="MERIDIAN_TOKEN_TTL", help="lifetime in seconds")
    ] = 12 * 3600,
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Print a bearer token from the embedded identity issuer (Identity Platform's stand-in)."""
    from meridian.domain.actors import TOKEN_ROLES
    from meridian.embedded.identity import LocalIdentityIssuer

    if role not in TOKEN_ROLES:
        console.print(f"[red]--role must be one of {', '.join(TOKEN_ROLES)}, not {role!r}[/]")
        raise typer.Exit(2)
    typer.echo(LocalIdentityIssuer(data_dir).token(sub, role, ttl))


@app.command()
def serve(
    service: Annotated[
        str,
        typer.Argument(
            envvar="MERIDIAN_SERVICE",
            help="A service of the catalog's services section, e.g. command, eta, live-map.",
            show_default=False,
        ),
    ],
) -> None:
    """Run one service in this process, as its Cloud Run container does (the image's entrypoint
    is `meridian serve`): the catalog names its package and what it adds to the environment (its
    role); `<package>.app` then runs as `python -m` runs it, configured from the environment
    (`PORT`, `MERIDIAN_BACKEND`, ...)."""
    import runpy

    from meridian.config import add_to_environment

    try:
        spec = load_catalog().services.get(service)
    except CatalogError as e:
        refuse(f"catalog error: {e}")
    if spec is None or spec.kind == "pipeline":
        servable = [n for n, s in load_catalog().services.items() if s.kind != "pipeline"]
        why = "runs on Dataflow, not as a service" if spec else "is not in the catalog"
        refuse(f"{service} {why}; one of: {', '.join(servable)}")
    add_to_environment(spec.env)
    runpy.run_module(f"{spec.package}.app", run_name="__main__", alter_sys=True)


def _mount_subcommands() -> None:
    """Sub-apps live beside what they drive; mounted here so `meridian --help` lists them."""
    from meridian.embedded.pubsub.cli import app as pubsub_app
    from meridian.embedded.workflows.cli import app as workflows_app
    from meridian.runtime.fleet_cli import app as fleet_app
    from meridian.runtime.job_cli import app as job_app
    from meridian.runtime.reconcile_cli import app as reconcile_app
    from meridian.runtime.release_cli import app as release_app
    from meridian.runtime.replay_cli import app as replay_app
    from meridian.runtime.report_cli import app as report_app
    from meridian.runtime.sim_cli import app as sim_app
    from meridian.runtime.status_cli import app as status_app
    from meridian.runtime.sync_cli import app as sync_app

    emulator = typer.Typer(
        help="Google API emulators over the embedded runtime.", no_args_is_help=True
    )
    emulator.add_typer(pubsub_app)
    app.add_typer(emulator, name="emulator")
    app.add_typer(workflows_app, name="workflows")
    app.add_typer(sim_app, name="sim")
    app.add_typer(fleet_app, name="fleet")
    app.add_typer(job_app, name="job")
    app.add_typer(status_app, name="status")
    app.add_typer(release_app, name="release")
    app.add_typer(replay_app, name="replay")
    app.add_typer(reconcile_app, name="reconcile")
    app.add_typer(report_app, name="report")
    app.add_typer(sync_app, name="sync")


_mount_subcommands()

clients = typer.Typer(
    help="Client systems (API keys) of the embedded runtime.", no_args_is_help=True
)
app.add_typer(clients, name="client")


@clients.command("create")
def create_client(
    client_id: Annotated[
        str, typer.Option("--client-id", envvar="MERIDIAN_CLIENT_ID", help="e.g. c-freshmart")
    ],
    name: Annotated[str, typer.Option(envvar="MERIDIAN_CLIENT_NAME", help="the client's name")],
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Register a client system and print its API key (shown once; only its digest is stored)."""
    from meridian import adapters
    from meridian.app.clients import register_client

    store = adapters.document_store(replace(Settings.from_env(), data_dir=data_dir))
    typer.echo(register_client(store, client_id, name))


@app.command("replay-dead-letters")
def replay_dead_letters(
    source: Annotated[
        str,
        typer.Option(
            envvar="MERIDIAN_REPLAY_SOURCE",
            help="the consumer (its catalog subscription, e.g. billing) whose dead letters to replay",
        ),
    ],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", envvar="MERIDIAN_REPLAY_DRY_RUN", help="list them; replay nothing"
        ),
    ] = False,
    max_messages: Annotated[
        int,
        typer.Option(
            "--max", envvar="MERIDIAN_REPLAY_MAX", min=0, help="at most this many (0: all)"
        ),
    ] = 0,
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Republish all of one consumer's dead letters to its topic once the bug that poisoned them
    is fixed. They wait in the consumer's own dead-letter subscription (SOURCE-dead-letters);
    the other consumers of the topic deduplicate by event id, so only SOURCE acts on them."""
    from meridian import adapters
    from meridian.app.replay import inspect_dead_letters
    from meridian.app.replay import replay_dead_letters as replay

    cat = load_catalog()
    try:
        dead_letters = cat.dead_letters_of(source)
    except CatalogError as e:
        refuse(str(e))
    topic = cat.subscriptions[source].topic
    settings = replace(Settings.from_env(), data_dir=data_dir)
    subscriber = adapters.subscriber(settings)
    progress = Console(stderr=True)
    verb = "listed" if dry_run else "replayed"

    def report(count: int) -> None:
        progress.print(f"{dead_letters}: {count} {verb}", highlight=False)

    limit = max_messages or None
    try:
        if dry_run:
            letters = inspect_dead_letters(subscriber, dead_letters, limit, progress=report)
        else:
            publisher = adapters.publisher(settings)
            count = replay(subscriber, publisher, dead_letters, topic, limit, progress=report)
    except NotFound as e:  # a data directory (or project) the catalog was never applied to
        refuse(f"{e}: apply the catalog first (`meridian up`, or terraform)")
    if dry_run:
        _print_dead_letters(f"Dead letters of {source} in {dead_letters}", letters)
        console.print(f"{len(letters)} dead letters of {source} (dry run: none replayed)")
    else:
        console.print(f"replayed {count} dead letters of {source} (from {dead_letters} to {topic})")


def _print_dead_letters(title: str, letters: list[ReceivedMessage]) -> None:
    table = Table(title=title)
    for column in ("message id", "event type", "event id", "attempts", "dead-lettered at"):
        table.add_column(column)
    for r in letters:
        attributes = r.message.attributes
        table.add_row(
            r.message_id,
            attributes.get("eventType", "-"),
            attributes.get("eventId", "-"),
            attributes.get("CloudPubSubDeadLetterSourceDeliveryCount", "-"),
            f"{r.publish_time:%Y-%m-%d %H:%M:%S}Z",
        )
    console.print(table)


if __name__ == "__main__":
    app()
