"""``meridian fleet import FLEET.csv``: load the dispatch desk's drivers and vehicles in bulk,
through the command service's API (``POST /v1/drivers``, ``POST /v1/vehicles``) as a dispatcher,
with a progress bar and a report of every row that failed (row, field, message); the exit status
is 1 if any row failed.

Mounted by ``meridian/runtime/cli.py`` (``app.add_typer(fleet_cli.app, name="fleet")``). Every
option reads an environment variable. Embedded, the local issuer of the data dir mints the
dispatcher's token, as ``meridian token`` does; on GCP, pass a dispatcher's token with ``--token``.

The CSV (``examples/fleet.csv``): a header row, then one driver or vehicle a row, ``kind`` saying
which; a cell left empty is a field not sent (the API's default, or an error if it is required).

    kind,id,name,phone,status,capacity_kg,capacity_parcels,depot_lat,depot_lng,shift_start,shift_end

- driver: ``id``, ``name``, ``phone`` (E.164), optional ``status`` (AVAILABLE or OFF_DUTY);
- vehicle: ``id``, ``capacity_kg``, ``capacity_parcels``, ``depot_lat``, ``depot_lng``, optional
  ``shift_start`` and ``shift_end`` (HH:MM) and ``status`` (AVAILABLE or OUT_OF_SERVICE).

Each row is posted with an ``Idempotency-Key`` derived from its content, so importing the same
file again after an interruption answers the rows already imported as they were answered the
first time (within the ledger's 24 hours) instead of refusing them as duplicates. The API's field
errors are reported under the CSV's column names (``depot.lat`` is ``depot_lat``).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meridian.config import Settings

COLUMNS = (
    "kind",
    "id",
    "name",
    "phone",
    "status",
    "capacity_kg",
    "capacity_parcels",
    "depot_lat",
    "depot_lng",
    "shift_start",
    "shift_end",
)
KINDS = {"driver": ("/v1/drivers", "driver_id"), "vehicle": ("/v1/vehicles", "vehicle_id")}
# Which columns each kind takes; a value in another column is an error, not ignored.
_TAKES = {
    "driver": {"kind", "id", "name", "phone", "status"},
    "vehicle": {"kind", "id", "status", "capacity_kg", "capacity_parcels"}
    | {"depot_lat", "depot_lng", "shift_start", "shift_end"},
}

app = typer.Typer(help="The dispatch desk's fleet: drivers and vehicles.", no_args_is_help=True)


@app.callback()
def fleet() -> None:
    """The dispatch desk's fleet: drivers and vehicles."""


@dataclass(frozen=True)
class RowError:
    row: int  # as a spreadsheet numbers it: the header is row 1
    field: str
    message: str


@dataclass
class ImportReport:
    imported: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    errors: list[RowError] = field(default_factory=list)

    @property
    def failed_rows(self) -> int:
        return len({e.row for e in self.errors})


class CsvError(ValueError):
    """The file cannot be imported at all (no header, an unknown column)."""


def read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The CSV's rows, numbered as a spreadsheet shows them, with empty cells left out."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in reader.fieldnames or ()]
        if not header:
            raise CsvError(f"{path} is empty: it needs a header row ({','.join(COLUMNS)})")
        unknown = [name for name in header if name not in COLUMNS]
        if unknown:
            raise CsvError(
                f"{path}: unknown columns {', '.join(unknown)}; known: {', '.join(COLUMNS)}"
            )
        for needed in ("kind", "id"):
            if needed not in header:
                raise CsvError(f"{path}: no {needed} column")
        reader.fieldnames = header
        rows = []
        for row in reader:
            cells = {k: v.strip() for k, v in row.items() if k is not None and v and v.strip()}
            if cells:
                rows.append((reader.line_num, cells))
        return rows


def request_of(cells: Mapping[str, str]) -> tuple[str, dict[str, Any]] | RowError:
    """The path and JSON body a row posts, or what is wrong with the row itself (a RowError
    numbered 0: the caller numbers it)."""
    kind = cells.get("kind", "")
    if kind not in KINDS:
        return RowError(0, "kind", f"is {kind or 'empty'}; one of {', '.join(KINDS)}")
    extra = sorted(set(cells) - _TAKES[kind])
    if extra:
        return RowError(0, extra[0], f"a {kind} has no {', '.join(extra)}")
    path, id_field = KINDS[kind]
    body: dict[str, Any] = {id_field: cells.get("id", "")}
    for name in ("name", "phone", "status", "capacity_kg", "capacity_parcels"):
        if name in cells:
            body[name] = cells[name]  # the API parses numbers and names the field if it cannot
    if "depot_lat" in cells or "depot_lng" in cells:
        body["depot"] = {"lat": cells.get("depot_lat"), "lng": cells.get("depot_lng")}
    if "shift_start" in cells or "shift_end" in cells:
        body["shift"] = {"start": cells.get("shift_start"), "end": cells.get("shift_end")}
    return path, body


def _column(location: str) -> str:
    """An API error's location as the CSV's column: ``body.depot.lat`` → ``depot_lat``."""
    parts = location.split(".")
    parts = parts[1:] if parts and parts[0] == "body" else parts
    column = "_".join(parts) or "row"
    return {"driver_id": "id", "vehicle_id": "id"}.get(column, column)


def _errors_of(number: int, answer: httpx.Response) -> list[RowError]:
    try:
        problem = answer.json()
    except ValueError:
        return [RowError(number, "row", f"HTTP {answer.status_code}: {answer.text[:200]}")]
    fields = problem.get("errors") or []
    if fields:
        return [RowError(number, _column(e["location"]), e["message"]) for e in fields]
    return [RowError(number, "row", problem.get("detail") or f"HTTP {answer.status_code}")]


def import_rows(
    client: httpx.Client, rows: list[tuple[int, dict[str, str]]], progress: Progress | None = None
) -> ImportReport:
    """Post every row through ``client`` (its base URL the command service, its headers the
    dispatcher's token); what was imported and every row's errors."""
    report = ImportReport()
    task = progress.add_task("importing", total=len(rows)) if progress else None
    for number, cells in rows:
        wanted = request_of(cells)
        if isinstance(wanted, RowError):
            report.errors.append(RowError(number, wanted.field, wanted.message))
        else:
            path, body = wanted
            key = hashlib.sha256(repr(sorted(cells.items())).encode()).hexdigest()[:32]
            answer = client.post(path, json=body, headers={"Idempotency-Key": f"fleet-{key}"})
            if answer.status_code == 201:
                report.imported[cells["kind"]] += 1
            else:
                report.errors.extend(_errors_of(number, answer))
        if progress is not None and task is not None:
            progress.advance(task)
    return report


def _dispatcher_token(data_dir: Path) -> str:
    from meridian.embedded.identity import LocalIdentityIssuer

    return LocalIdentityIssuer(data_dir).token("fleet-import", "dispatcher", 3600)


@app.command("import")
def import_fleet(
    csv_path: Annotated[
        Path,
        typer.Argument(
            help="The fleet CSV (columns: see examples/fleet.csv).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ],
    command_url: Annotated[
        str | None,
        typer.Option(
            "--command-url",
            envvar="MERIDIAN_COMMAND_URL",
            help="Default: the local command service.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="MERIDIAN_FLEET_TOKEN",
            help="A dispatcher's bearer token (GCP); default: minted from the data dir.",
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", envvar="MERIDIAN_DATA_DIR", help="Embedded data dir (token issuer)."
        ),
    ] = Path(".meridian"),
) -> None:
    """Register every driver and vehicle of CSV_PATH; report each row that failed (exit 1)."""
    try:
        rows = read_rows(csv_path)
    except (CsvError, UnicodeDecodeError, csv.Error) as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    bearer = token or _dispatcher_token(data_dir)
    url = command_url or Settings.from_env().url_of("command")
    err = Console(stderr=True)
    with (
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {bearer}"}, timeout=30
        ) as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress,
    ):
        report = import_rows(client, rows, progress)
    imported = ", ".join(f"{n} {kind}s" for kind, n in report.imported.items())
    typer.echo(f"imported {imported}; {report.failed_rows} of {len(rows)} rows failed")
    if report.errors:
        table = Table("row", "field", "message", title="rows not imported")
        for error in report.errors:
            table.add_row(str(error.row), error.field, error.message)
        Console(stderr=True, width=120).print(table)
        raise typer.Exit(1)
