"""``meridian sync``: operating the migration bridge (docs/migration.md).

- ``sync run``: an on-demand sync, the same ``SyncRequested`` as ``POST /v1/sync-requests``
  (``meridian.app.sync_requests.sync_requested`` builds both), published onto ``sync.requests``
  through the platform's publisher. Chosen over calling the API because an operator at this CLI
  already holds the platform's credentials (ADC with Pub/Sub publisher on the topic; the local
  broker), needs no operator token, and can ask for a sync while the command service is down; the
  event is the same, built by the same function, so the pipeline cannot tell the two apart.
- ``sync reconcile``: the reconciliation (``services.sync.reconcile``) of whole entities, with a
  progress bar and a table of the differences; exit 1 on any.
- ``sync backfill``: the first load (``services.sync.backfill``), resumable, with a progress bar
  and the throughput.
- ``sync status``: the pull's cursors and their lag, the last runs and their outcome, the last
  reconciliation (``services.sync.status``); ``--json`` for scripts.

Every option reads an environment variable; errors are one line with a non-zero exit (the
``meridian`` command's ``MeridianCli``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from meridian.config import Settings

if TYPE_CHECKING:
    from services.sync.reconcile import Reconciliation

app = typer.Typer(
    help="Operate the migration bridge between the legacy monolith and Meridian.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="MERIDIAN_DATA_DIR", help="Where the embedded runtime keeps its state."
    ),
]
Entities = Annotated[
    list[str] | None,
    typer.Option(
        "--entity",
        envvar="MERIDIAN_SYNC_ENTITY",
        help="An entity (clients, drivers, vehicles, shipments, parcels); repeat for more. "
        "Default: all of them.",
    ),
]


def _settings(data_dir: Path) -> Settings:
    return replace(Settings.from_env(), data_dir=data_dir)


def _entities(names: list[str] | None) -> list[str]:
    from services.sync.entities import ENTITIES

    for name in names or ():
        if name not in ENTITIES:
            raise typer.BadParameter(
                f"unknown entity {name!r}: one of {', '.join(ENTITIES)}", param_hint="--entity"
            )
    return list(names or ENTITIES)


class _Bar:
    """``services.sync.reconcile.Progress`` on a rich progress bar: one task per stage."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, TaskID(-1)

    def start(self, label: str, total: int | None) -> None:
        self.task = self.progress.add_task(label, total=total)

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command("run")
def run(
    entity: Annotated[
        str,
        typer.Option(
            "--entity",
            envvar="MERIDIAN_SYNC_ENTITY",
            help="What to sync: clients, drivers, vehicles, shipments or parcels.",
        ),
    ],
    ids: Annotated[
        str,
        typer.Option(
            "--ids", envvar="MERIDIAN_SYNC_IDS", help="Exactly these rows (comma-separated ids)."
        ),
    ] = "",
    since: Annotated[
        str,
        typer.Option(
            "--since",
            envvar="MERIDIAN_SYNC_SINCE",
            help="Every row the monolith changed at or after this time (ISO 8601 with its "
            "offset, e.g. 2026-03-02T06:00:00+05:30). Neither --ids nor --since: every row.",
        ),
    ] = "",
    requester: Annotated[
        str,
        typer.Option(
            "--requester",
            envvar="MERIDIAN_SYNC_REQUESTER",
            help="Who asks (the run's events carry it).",
        ),
    ] = "operator-cli",
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Ask for a sync now: publish one SyncRequested onto sync.requests and print its request
    id (the run's SyncStarted/SyncEnded/SyncError carry it)."""
    from meridian import adapters
    from meridian.app.sync_requests import RequestSync, sync_requested
    from meridian.catalog import load_catalog
    from meridian.codec.events import EventCodec

    try:
        command = RequestSync.model_validate(
            {
                "entity": entity,
                "ids": [i.strip() for i in ids.split(",") if i.strip()],
                "since": since or None,
            }
        )
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}"
            for err in e.errors()
        )
        raise typer.BadParameter(problems) from None
    settings = _settings(data_dir)
    codec = EventCodec(load_catalog())
    event = sync_requested(command, requester, datetime.now(UTC), f"cli-{uuid.uuid4().hex[:20]}")
    adapters.publisher(settings).publish(
        codec.topic_of(event.event_type), [codec.to_message(event)]
    )
    typer.echo(f"{event.request_id}\t{event.entity}\tpublished onto sync.requests")


@app.command("reconcile")
def reconcile(
    entities: Entities = None,
    in_flight: Annotated[
        float | None,
        typer.Option(
            "--in-flight",
            envvar="MERIDIAN_SYNC_IN_FLIGHT_S",
            min=0,
            help="Seconds: a record changed on either side more recently, and not carried "
            "across yet, is not a difference (default 300).",
        ),
    ] = None,
    page_size: Annotated[
        int,
        typer.Option(
            "--page-size", envvar="MERIDIAN_SYNC_PAGE_SIZE", min=1, help="Records per page."
        ),
    ] = 500,
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Compare the monolith and Meridian, entity by entity; print the differences and exit 1 if
    there are any. The report is saved (sync status shows it)."""
    from meridian import adapters
    from services.sync import legacy
    from services.sync.reconcile import JOB, Reconciler, log_report, save_report

    settings = _settings(data_dir)
    names = _entities(entities)
    window = settings.legacy.in_flight_s if in_flight is None else in_flight
    store = adapters.document_store(settings, service=JOB, rereads=False)
    console = Console(stderr=True)
    report_id = f"cli-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    with legacy.connect(settings, autocommit=True) as conn, _progress(console) as bar:
        report = Reconciler(
            store,
            conn,
            in_flight=timedelta(seconds=window),
            page_size=page_size,
            progress=_Bar(bar),
        ).everything(report_id, names)
    save_report(store, report)
    log_report(report)
    out = Console()
    out.print(_tallies_table(report))
    if report.differences:
        table = Table("entity", "id", "how", "field", "monolith", "meridian", title="Differences")
        for d in report.differences:
            if not d.fields:
                table.add_row(d.entity, d.id, d.kind.value, "", "", "")
            for f in d.fields:
                table.add_row(
                    d.entity, d.id, d.kind.value, f.field, repr(f.monolith), repr(f.meridian)
                )
        out.print(table)
    if not report.ok:
        typer.secho(report.summary(), fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(report.summary())


def _tallies_table(report: Reconciliation) -> Table:
    table = Table(
        "entity",
        "monolith",
        "meridian",
        "matched",
        "in flight",
        "native",
        "differences",
        title=f"Reconciliation {report.report_id} ({report.scope})",
    )
    for name, t in report.tallies.items():
        table.add_row(
            name,
            *(
                str(v)
                for v in (t.monolith, t.meridian, t.matched, t.in_flight, t.native, t.differences)
            ),
        )
    return table


@app.command("backfill")
def backfill(
    entities: Entities = None,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            envvar="MERIDIAN_SYNC_BACKFILL_BATCH",
            min=1,
            help="Rows read and applied per batch; the checkpoint moves after each.",
        ),
    ] = 1000,
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """Move every row of the monolith into Meridian through the sync jobs' apply path. Resumable:
    run it again after a crash and it continues from its last checkpoint."""
    from meridian import adapters
    from services.sync import legacy
    from services.sync.backfill import JOB
    from services.sync.backfill import backfill as run_backfill

    settings = _settings(data_dir)
    names = _entities(entities)
    store = adapters.document_store(settings, service=JOB, rereads=False)
    console = Console(stderr=True)
    with legacy.connect(settings, autocommit=True) as conn, _progress(console) as bar:
        moved = run_backfill(store, conn, names, batch=batch, progress=_Bar(bar))
    table = Table("entity", "rows", "created", "unchanged", "rejected", "seconds", "rows/s")
    for name, m in moved.items():
        table.add_row(
            name,
            str(m.rows),
            str(m.outcome.created),
            str(m.outcome.unchanged),
            str(len(m.outcome.rejected)),
            f"{m.seconds:.1f}",
            f"{m.rows_per_s:,.0f}",
        )
    Console().print(table)
    rows = sum(m.rows for m in moved.values())
    seconds = sum(m.seconds for m in moved.values())
    rate = f"{rows / seconds:,.0f} rows/s" if seconds else "nothing left to do"
    typer.echo(f"backfill: {rows} rows in {seconds:.1f} s ({rate})")
    rejected = [r for m in moved.values() for r in m.outcome.rejected]
    if rejected:
        typer.secho(
            f"{len(rejected)} rows rejected (not valid Meridian records; see the log): "
            + ", ".join(rejected[:10]),
            fg="red",
            err=True,
        )
        raise typer.Exit(1)


@app.command("status")
def status(
    as_json: Annotated[
        bool, typer.Option("--json", envvar="MERIDIAN_STATUS_JSON", help="Print JSON.")
    ] = False,
    hours: Annotated[
        float,
        typer.Option(
            "--hours",
            envvar="MERIDIAN_SYNC_STATUS_HOURS",
            min=0,
            help="How far back to look for runs.",
        ),
    ] = 24.0,
    runs: Annotated[
        int,
        typer.Option("--runs", envvar="MERIDIAN_SYNC_STATUS_RUNS", min=1, help="Runs to show."),
    ] = 10,
    data_dir: DataDir = Path(".meridian"),
) -> None:
    """The pull's cursors and their lag, the last runs and their outcome, the last
    reconciliation."""
    from meridian import adapters
    from meridian.app.archive import archive_table
    from meridian.catalog import load_catalog
    from meridian.codec.events import EventCodec
    from services.sync import legacy
    from services.sync.reconcile import latest_report
    from services.sync.status import cursors, last_runs

    settings = _settings(data_dir)
    now = datetime.now(UTC)
    catalog = load_catalog()
    with legacy.connect(settings, autocommit=True) as conn:
        positions = cursors(conn)
    found_runs = last_runs(
        adapters.warehouse(settings),
        archive_table(catalog, "logistics.events"),
        EventCodec(catalog),
        now - timedelta(hours=hours),
        runs,
    )
    report = latest_report(adapters.document_store(settings, rereads=False))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "cursors": [{**asdict(c), "lag_s": round(c.lag_s(now), 3)} for c in positions],
                    "runs": [asdict(r) for r in found_runs],
                    "reconciliation": None if report is None else report.to_document(),
                },
                default=_json_default,
                indent=2,
            )
        )
        return
    out = Console()
    table = Table("entity", "cursor", "last id", "lag", title="Pull cursors")
    for c in positions:
        table.add_row(
            c.entity,
            c.updated_at.isoformat() if c.updated_at else "(never pulled)",
            c.id,
            f"{c.lag_s(now):.0f} s",
        )
    out.print(table)
    table = Table("request", "entity", "outcome", "started", "ended", "step", "reason")
    table.title = f"Runs (last {hours:g} h)"
    for r in found_runs:
        table.add_row(
            r.request_id,
            r.entity,
            r.outcome,
            r.started_at.isoformat() if r.started_at else "",
            r.ended_at.isoformat() if r.ended_at else "",
            r.step,
            r.reason[:80],
        )
    out.print(table)
    out.print(report.summary() if report else "no reconciliation yet")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
