"""``meridian report sla``: the SLA report of a period from the warehouse, as a table, CSV, or an
HTML page whose charts are inline SVG drawn here (no script, no CDN: the page opens offline).

Mounted by ``meridian/runtime/cli.py``. The figures are ``meridian.app.sla_report``'s; every
option reads an environment variable; the backend is ``MERIDIAN_BACKEND``'s.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from meridian.app.sla_report import SlaReport
from meridian.config import Settings

app = typer.Typer(help="Reports from the warehouse.", no_args_is_help=True, add_completion=False)

COLUMNS = ("client", "day", "parcels", "on time", "first attempt", "ETA error (min)")


def _rows(report: SlaReport) -> list[tuple[str, ...]]:
    return [
        (
            d.client_id,
            d.day,
            str(d.parcels),
            f"{d.on_time_rate:.1%}",
            f"{d.first_attempt_rate:.1%}",
            "" if d.eta_error_s is None else f"{d.eta_error_s / 60:.1f}",
        )
        for d in report.daily
    ]


def as_table(report: SlaReport) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SLA {report.start} to {report.end}")
    for column in COLUMNS:
        table.add_column(column)
    for row in _rows(report):
        table.add_row(*row)
    causes = Table(title="breaches by cause")
    for column in ("client", "day", "cause", "breaches"):
        causes.add_column(column)
    for b in report.breaches:
        causes.add_row(b.client_id, b.day, b.cause, str(b.breaches))
    console = Console(file=io.StringIO(), width=120)
    console.print(table, causes)
    return console.file.getvalue()  # type: ignore[attr-defined]


def as_csv(report: SlaReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "kind",
            "client_id",
            "day",
            "parcels",
            "delivered",
            "on_time",
            "first_attempt",
            "eta_error_s",
            "cause",
            "breaches",
        ]
    )
    for d in report.daily:
        writer.writerow(
            [
                "daily",
                d.client_id,
                d.day,
                d.parcels,
                d.delivered,
                d.on_time,
                d.first_attempt,
                "" if d.eta_error_s is None else round(d.eta_error_s, 1),
                "",
                "",
            ]
        )
    for b in report.breaches:
        writer.writerow(["breach", b.client_id, b.day, "", "", "", "", "", b.cause, b.breaches])
    return out.getvalue()


def bar_chart(title: str, css: str, bars: list[tuple[str, float, str]], limit: float) -> str:
    """A horizontal bar chart as inline SVG: each bar is (label, value, value's text)."""
    width, row, left = 640, 24, 220
    height = row * len(bars) + 40
    parts = [
        f'<svg class="chart {css}" role="img" aria-label="{html.escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="0" y="16" class="title">{html.escape(title)}</text>',
    ]
    for i, (label, value, text) in enumerate(bars):
        y = 30 + i * row
        length = 0 if limit <= 0 else max(1.0, (width - left - 70) * value / limit)
        parts += [
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{html.escape(label)}</text>',
            f'<rect class="bar" x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 8}">'
            f"<title>{html.escape(label)}: {html.escape(text)}</title></rect>",
            f'<text x="{left + length + 6:.1f}" y="{y + 15}">{html.escape(text)}</text>',
        ]
    return "\n".join([*parts, "</svg>"])


def as_html(report: SlaReport) -> str:
    on_time = [
        (f"{d.client_id} {d.day}", d.on_time_rate, f"{d.on_time_rate:.1%}") for d in report.daily
    ]
    first = [
        (f"{d.client_id} {d.day}", d.first_attempt_rate, f"{d.first_attempt_rate:.1%}")
        for d in report.daily
    ]
    eta = [
        (f"{d.client_id} {d.day}", d.eta_error_s / 60, f"{d.eta_error_s / 60:.1f} min")
        for d in report.daily
        if d.eta_error_s is not None
    ]
    causes: dict[str, int] = {}
    for b in report.breaches:
        causes[b.cause] = causes.get(b.cause, 0) + b.breaches
    cause_bars = [(c, float(n), str(n)) for c, n in sorted(causes.items(), key=lambda x: -x[1])]
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in _rows(report)
    )
    charts = [
        bar_chart("On-time rate", "on-time", on_time, 1.0),
        bar_chart("First-attempt delivery rate", "first-attempt", first, 1.0),
        bar_chart(
            "ETA error (mean, minutes)", "eta-error", eta, max((v for _, v, _ in eta), default=0.0)
        ),
        bar_chart(
            "Breaches by cause",
            "causes",
            cause_bars,
            max((v for _, v, _ in cause_bars), default=0.0),
        ),
    ]
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Meridian SLA {report.start} to {report.end}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
svg.chart {{ display: block; margin: 1.5em 0; }}
svg.chart text {{ font-size: 12px; }} svg.chart text.title {{ font-size: 15px; font-weight: 600; }}
svg.chart rect.bar {{ fill: #2f6fb0; }} svg.causes rect.bar {{ fill: #c0392b; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; }}
</style></head>
<body>
<h1>SLA report, {report.start} to {report.end}</h1>
{"".join(charts)}
<table id="daily"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
</body></html>
"""


@app.command("sla")
def sla(
    start: Annotated[
        str, typer.Option("--from", envvar="MERIDIAN_REPORT_FROM", help="first day, YYYY-MM-DD")
    ],
    end: Annotated[
        str, typer.Option("--to", envvar="MERIDIAN_REPORT_TO", help="last day, YYYY-MM-DD")
    ],
    client: Annotated[
        str, typer.Option("--client", envvar="MERIDIAN_REPORT_CLIENT", help="one client only")
    ] = "",
    output: Annotated[
        str,
        typer.Option(
            "--format", envvar="MERIDIAN_REPORT_FORMAT", help="table, csv or html (to stdout)"
        ),
    ] = "table",
    table: Annotated[
        str,
        typer.Option(
            "--archive-table",
            envvar="MERIDIAN_REPORT_ARCHIVE_TABLE",
            help="the event archive (default: the catalog's BigQuery subscription on "
            "logistics.events)",
        ),
    ] = "",
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="MERIDIAN_DATA_DIR",
            help="Where the embedded runtime keeps its state.",
        ),
    ] = Path(".meridian"),
) -> None:
    """On-time rate per client per day, breaches and their causes, ETA accuracy and the
    first-attempt delivery rate of the parcels whose windows end from --from to --to."""
    from meridian import adapters
    from meridian.app.sla_report import sla_report
    from meridian.catalog import load_catalog
    from meridian.codec.events import EventCodec
    from meridian.runtime.reconcile_cli import archive_table

    if output not in ("table", "csv", "html"):
        typer.secho(f"--format {output!r}: one of table, csv, html", fg="red", err=True)
        raise typer.Exit(2)
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as e:
        typer.secho(f"--from/--to: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    source = table or archive_table()
    if not source:
        typer.secho("no event archive in the catalog: pass --archive-table", fg="red", err=True)
        raise typer.Exit(2)
    settings = replace(Settings.from_env(), data_dir=data_dir)
    report = sla_report(
        adapters.warehouse(settings), source, EventCodec(load_catalog()), first, last, client
    )
    render = {"table": as_table, "csv": as_csv, "html": as_html}[output]
    typer.echo(render(report), nl=False)
