"""``meridian replay``: seek a subscription to a time or a snapshot (Pub/Sub's seek, on the
embedded broker or through the Google adapter), take a snapshot, or republish a window of
archived events from the warehouse (``meridian.app.archive``). Consumers deduplicate by event id,
so a replay makes the one that needs it act again and the others acknowledge duplicates.
Every option also reads an environment variable."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from meridian.catalog import Catalog, load_catalog
from meridian.config import Settings
from meridian.domain.errors import CatalogError
from meridian.filters import FilterSyntaxError, parse_filter

app = typer.Typer(
    help="Replay: seek a subscription to a time or a snapshot, or republish archived events.",
    no_args_is_help=True,
    invoke_without_command=True,
)
snapshots = typer.Typer(help="Snapshots of a subscription, to seek back to.", no_args_is_help=True)
app.add_typer(snapshots, name="snapshot")
console = Console()

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="MERIDIAN_DATA_DIR", help="Where the embedded runtime keeps its state."
    ),
]
SubscriptionName = Annotated[
    str | None,
    typer.Option(
        "--subscription",
        envvar="MERIDIAN_REPLAY_SUBSCRIPTION",
        help="The catalog subscription, e.g. eta.",
    ),
]


def _refuse(message: str) -> NoReturn:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(2)


def _settings(data_dir: Path) -> Settings:
    return replace(Settings.from_env(), data_dir=data_dir)


def _catalog() -> Catalog:
    try:
        return load_catalog()
    except CatalogError as e:
        _refuse(f"catalog error: {e}")


def _subscription(catalog: Catalog, name: str | None) -> str:
    if not name:
        _refuse("--subscription is required")
    if name not in catalog.subscriptions:
        _refuse(
            f"no subscription {name!r} in the catalog; one of: {', '.join(catalog.subscriptions)}"
        )
    return name


def _instant(option: str, text: str) -> datetime:
    """An ISO 8601 time (``2026-11-21T08:00:00Z``); one without a zone is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        _refuse(f"{option} {text!r} is not an ISO 8601 time such as 2026-11-21T08:00:00Z")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.callback()
def seek(
    ctx: typer.Context,
    subscription: SubscriptionName = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            envvar="MERIDIAN_REPLAY_TO",
            help="Seek to this time (ISO 8601, UTC without a zone): messages published from then "
            "on are delivered again, earlier ones count as acknowledged.",
        ),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            "--snapshot",
            envvar="MERIDIAN_REPLAY_SNAPSHOT",
            help="Seek to this snapshot: its backlog and everything published after it.",
        ),
    ] = None,
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Seek a subscription to a time (--to) or a snapshot (--snapshot): `meridian replay
    --subscription eta --to 2026-11-21T08:00:00Z`."""
    if ctx.invoked_subcommand is not None:
        return
    name = _subscription(_catalog(), subscription)
    if (to is None) == (snapshot is None):
        _refuse("give one of --to TIME or --snapshot NAME")
    from meridian import adapters

    target: datetime | str = snapshot if snapshot is not None else _instant("--to", to or "")
    adapters.subscriber(_settings(data_dir)).seek(name, target)
    where = f"snapshot {target}" if isinstance(target, str) else f"{target.isoformat()}"
    console.print(f"subscription {name} sought to {where}", highlight=False)


@snapshots.command("create")
def create_snapshot(
    subscription: SubscriptionName = None,
    name: Annotated[
        str,
        typer.Option(
            "--name", envvar="MERIDIAN_REPLAY_SNAPSHOT_NAME", help="The snapshot's name, unique."
        ),
    ] = "",
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Record a subscription's backlog now, to seek back to it later with --snapshot (a
    snapshot lives at most 7 days, less the age of the oldest unacknowledged message)."""
    sub = _subscription(_catalog(), subscription)
    if not name:
        _refuse("--name is required")
    from meridian import adapters

    adapters.subscriber(_settings(data_dir)).create_snapshot(name, sub)
    console.print(f"snapshot {name} of subscription {sub} created", highlight=False)


@app.command()
def archive(
    topic: Annotated[
        str,
        typer.Option(
            "--topic", envvar="MERIDIAN_REPLAY_TOPIC", help="The archived topic to republish to."
        ),
    ] = "logistics.events",
    start: Annotated[
        str,
        typer.Option(
            "--from",
            envvar="MERIDIAN_REPLAY_FROM",
            help="Start of the window, by publish time (ISO 8601, UTC without a zone).",
            show_default=False,
        ),
    ] = "",
    end: Annotated[
        str,
        typer.Option(
            "--to",
            envvar="MERIDIAN_REPLAY_TO",
            help="End of the window, excluded (ISO 8601, UTC without a zone).",
            show_default=False,
        ),
    ] = "",
    condition: Annotated[
        str,
        typer.Option(
            "--filter",
            envvar="MERIDIAN_REPLAY_FILTER",
            help="Only events whose attributes match this Pub/Sub filter, e.g. "
            "'attributes.eventType = \"ParcelDelivered\"'.",
        ),
    ] = "",
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Republish a window of archived events from the warehouse to their topic.

    Each goes out once, with its event id and attributes, so every consumer that has already
    seen it deduplicates it."""
    from meridian import adapters
    from meridian.app.archive import archive_table, archived_count, ordering_key_of, replay_archive
    from meridian.codec.events import EventCodec

    catalog = _catalog()
    if topic not in catalog.topics:
        _refuse(f"no topic {topic!r} in the catalog; one of: {', '.join(catalog.topics)}")
    if not start or not end:
        _refuse("give the window: --from TIME --to TIME")
    lo, hi = _instant("--from", start), _instant("--to", end)
    if hi <= lo:
        _refuse("--to must be after --from")
    try:
        table = archive_table(catalog, topic)
        parsed = parse_filter(condition) if condition else None
    except CatalogError as e:
        _refuse(str(e))
    except FilterSyntaxError as e:  # names the problem and its column
        _refuse(f"--filter: {e}")
    settings = _settings(data_dir)
    warehouse = adapters.warehouse(settings)
    total = archived_count(warehouse, table, lo, hi)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(f"{table} → {topic}", total=total)
        done = replay_archive(
            warehouse,
            adapters.publisher(settings),
            table,
            topic,
            lo,
            hi,
            ordering_key_of(EventCodec(catalog), catalog),
            parsed,
            progress=lambda read: bar.update(task, completed=read),
        )
    console.print(
        f"republished {done.republished} events to {topic} from {table}"
        f" ({done.read} archived rows in the window, {done.filtered} filtered out,"
        f" {done.duplicates} duplicates)",
        highlight=False,
    )
