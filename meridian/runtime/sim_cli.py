"""``meridian sim``: drive a simulated fleet against the command service's telemetry endpoint.

Mounted by ``meridian/runtime/cli.py`` (``app.add_typer(sim_cli.app, name="sim")``). Every option reads an
environment variable. The simulator posts as a fleet gateway (the role that may report any
vehicle; a driver may report only their own): embedded, the local issuer of the data dir mints
the gateway's token; on GCP, pass a gateway's or a dispatcher's token with ``--token``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from meridian.config import Settings
from meridian.runtime.sim import Fleet, HttpSink, SimOptions, SimReport, run_fleet

app = typer.Typer(help="Fleet simulator: N vehicles pinging /v1/telemetry.", add_completion=False)


@app.callback(invoke_without_command=True)
def sim(
    vehicles: Annotated[
        int, typer.Option("--vehicles", envvar="MERIDIAN_SIM_VEHICLES", min=1, help="Fleet size.")
    ] = 300,
    duration: Annotated[
        float,
        typer.Option(
            "--duration", envvar="MERIDIAN_SIM_DURATION", help="Seconds (0: until Ctrl-C)."
        ),
    ] = 0.0,
    ping_interval: Annotated[
        float,
        typer.Option(
            "--ping-interval",
            envvar="MERIDIAN_SIM_PING_INTERVAL",
            help="Seconds between a vehicle's pings.",
        ),
    ] = 5.0,
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
            envvar="MERIDIAN_SIM_TOKEN",
            help="A gateway or dispatcher token for every batch (GCP).",
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", envvar="MERIDIAN_DATA_DIR", help="Embedded data dir (token issuer)."
        ),
    ] = Path(".meridian"),
    center: Annotated[
        str, typer.Option("--center", envvar="MERIDIAN_SIM_CENTER", help="Depot as 'lat,lng'.")
    ] = "12.9716,77.5946",
    radius_km: Annotated[
        float,
        typer.Option(
            "--radius-km", envvar="MERIDIAN_SIM_RADIUS_KM", help="Stops lie within this radius."
        ),
    ] = 8.0,
    group_size: Annotated[
        int,
        typer.Option(
            "--group-size",
            envvar="MERIDIAN_SIM_GROUP_SIZE",
            min=1,
            help="Vehicles per request.",
        ),
    ] = 50,
    prefix: Annotated[
        str,
        typer.Option(
            "--prefix", envvar="MERIDIAN_SIM_PREFIX", help="Vehicle ids are PREFIX-00000…"
        ),
    ] = "veh",
    seed: Annotated[
        int,
        typer.Option(
            "--seed", envvar="MERIDIAN_SIM_SEED", help="Random seed: the same seed, the same fleet."
        ),
    ] = 7,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", envvar="MERIDIAN_SIM_QUIET", help="Print only the final count, no progress."
        ),
    ] = False,
) -> None:
    """Drive VEHICLES vehicles between stops, each pinging every PING_INTERVAL seconds."""
    lat, lng = (float(part) for part in center.split(","))
    options = SimOptions(
        vehicles=vehicles,
        ping_interval_s=ping_interval,
        center=(lat, lng),
        radius_km=radius_km,
        seed=seed,
        prefix=prefix,
    )
    if token is None:
        from meridian.embedded.identity import LocalIdentityIssuer

        token = LocalIdentityIssuer(data_dir).token("gw-sim", "gateway")
    fixed = token
    url = command_url or Settings.from_env().url_of("command")
    sink = HttpSink(url, lambda _: fixed, group_size=group_size)

    def progress(report: SimReport) -> None:
        if not quiet and report.ticks % 10 == 0:
            typer.echo(
                f"{report.ticks:>5} s  sent {report.sent:>8}  accepted {report.accepted:>8}  "
                f"failed {sink.failed}  late by ≤ {report.behind_s:.1f} s"
            )

    async def main() -> SimReport:
        try:
            return await run_fleet(Fleet(options), sink, duration, on_tick=progress)
        finally:
            await sink.close()

    try:
        report = asyncio.run(main())
    except KeyboardInterrupt:
        return
    typer.echo(f"sent {report.sent} pings, {report.accepted} accepted, {sink.failed} failed")


if __name__ == "__main__":
    app()
