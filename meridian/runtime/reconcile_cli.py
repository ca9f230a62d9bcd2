"""``meridian reconcile``: do the parcels, their status views, billing, the client webhooks and the
event archive agree for a day? (the use case: ``meridian.app.reconcile``).

Mounted by ``meridian/runtime/cli.py``. Prints one line per difference (parcel id, the source
that disagrees, how) and exits 1 when there is any, 0 when all agree: a nightly Cloud Run Job
(``terraform/modules/meridian/reconcile.tf``) fails loudly. Every option reads an environment
variable; the backend is ``MERIDIAN_BACKEND``'s, as for every service.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from meridian.catalog import BigQueryDelivery, load_catalog
from meridian.config import Settings

EVENTS_TOPIC = "logistics.events"

app = typer.Typer(help="Platform reconciliation.", add_completion=False)


def archive_table() -> str | None:
    """The table a BigQuery subscription on ``logistics.events`` archives to, if the catalog has
    one (the business-event archive)."""
    for subscription in load_catalog().subscriptions.values():
        if subscription.topic == EVENTS_TOPIC and isinstance(
            subscription.delivery, BigQueryDelivery
        ):
            return subscription.delivery.table
    return None


@app.callback(invoke_without_command=True)
def reconcile(
    day: Annotated[
        str | None,
        typer.Option(
            "--day",
            envvar="MERIDIAN_RECONCILE_DAY",
            help="UTC day, YYYY-MM-DD, of the delivery windows to check (default: yesterday)",
        ),
    ] = None,
    in_flight: Annotated[
        float,
        typer.Option(
            "--in-flight",
            envvar="MERIDIAN_RECONCILE_IN_FLIGHT_S",
            min=0,
            help="seconds: parcels changed more recently are left out (their events may be on "
            "their way)",
        ),
    ] = 120.0,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="MERIDIAN_DATA_DIR",
            help="Where the embedded runtime keeps its state.",
        ),
    ] = Path(".meridian"),
) -> None:
    """Compare a day's parcels with their status views, billing charges, webhook deliveries and
    archived events; print the differences, exit 1 if there are any."""
    from meridian import adapters
    from meridian.app.reconcile import reconcile_day

    now = datetime.now(UTC)
    try:
        which = date.fromisoformat(day) if day else (now - timedelta(days=1)).date()
    except ValueError:
        typer.secho(f"--day {day!r} is not a date (YYYY-MM-DD)", fg="red", err=True)
        raise typer.Exit(2) from None
    settings = replace(Settings.from_env(), data_dir=data_dir)
    table = archive_table()
    differences = 0
    for difference in reconcile_day(
        adapters.document_store(settings, rereads=False),
        which,
        now,
        warehouse=adapters.warehouse(settings) if table else None,
        archive_table=table,
        in_flight=timedelta(seconds=in_flight),
    ):
        differences += 1
        typer.echo(f"{difference.parcel_id}\t{difference.source}\t{difference.what}")
    if differences:
        typer.secho(f"{which}: {differences} differences", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"{which}: all agree")
