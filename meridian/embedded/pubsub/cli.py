"""``meridian emulator pubsub``: serve the embedded broker on the Pub/Sub gRPC API."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from meridian.catalog import load_catalog
from meridian.config import Settings

app = typer.Typer(help="The embedded Pub/Sub broker on the google.pubsub.v1 gRPC API.")


@app.command()
def pubsub(
    host: str = typer.Option(
        "127.0.0.1", envvar="PUBSUB_EMULATOR_LISTEN_HOST", help="Address to listen on (loopback)."
    ),
    port: int = typer.Option(8085, envvar="PUBSUB_EMULATOR_PORT", help="Port; 0 picks a free one."),
    data_dir: Path = typer.Option(
        Path(".meridian"), envvar="MERIDIAN_DATA_DIR", help="Data directory."
    ),
    project: str = typer.Option(
        "meridian-local", envvar="GOOGLE_CLOUD_PROJECT", help="Project id."
    ),
    catalog: bool = typer.Option(
        True,
        envvar="MERIDIAN_PUBSUB_APPLY_CATALOG",
        help="Create the catalog's topics and subscriptions.",
    ),
) -> None:
    """Serve until SIGINT/SIGTERM; prints PUBSUB_EMULATOR_HOST for clients."""
    # Imported here, not at the top: every service starts through `meridian serve`, which mounts
    # this command, and the gRPC server's import cost each of them ~260 ms at start.
    from meridian.embedded.pubsub.broker import Broker
    from meridian.embedded.pubsub.grpc_server import serve

    broker = Broker(data_dir, project=project)
    if catalog:
        settings = Settings.from_env()
        broker.apply_catalog(
            load_catalog(), lambda service, path: f"{settings.url_of(service)}{path}"
        )
    server, bound = serve(broker, host, port)
    typer.echo(f"PUBSUB_EMULATOR_HOST={host}:{bound}", err=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
