"""`meridian status`: the platform's vital signs on one screen (#22 item 3; docs/operations.md).

Per subscription its backlog, oldest unacked message's age and dead-letter depth (the backlog of
its ``S-dead-letters`` keeper); per service whether it is up and, locally, how often the
supervisor restarted it; per Eventarc trigger the committed changes its forwarder has not yet
read. One ``VitalSigns`` reader per backend fills the same rows: ``EmbeddedVitalSigns`` reads
the embedded runtime of a data directory (the broker's own metrics,
``meridian.embedded.pubsub.metrics``; ``/healthz``; the supervisor's ``logs/restarts.json``; the
change log's head minus each trigger's cursor), ``CloudMonitoringVitalSigns`` reads Cloud
Monitoring on gcp (``meridian/gcp/monitoring.py``: Pub/Sub's subscription metrics, Cloud Run's
instances and requests; a minute or two behind; no Eventarc lag or restarts there). A vital sign
past its threshold is red; the thresholds are ``meridian/release/slos.yaml``'s ``vital_signs``,
the file the Terraform alerts read too. Live (refreshed every 2 s) by default; ``--once`` prints
one frame, ``--json`` one frame as JSON. Either exits 1 when a vital sign breaches, so a script
can wait on it.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from meridian.catalog import Catalog, load_catalog
from meridian.config import Settings
from meridian.release.canary import slos_file
from meridian.runtime.supervisor import local_catalog, read_restarts

if TYPE_CHECKING:
    from meridian.gcp.monitoring import CloudMonitoring

app = typer.Typer(help="The platform's vital signs.", invoke_without_command=True)

# Catalog service kinds that serve HTTP, hence /healthz.
_SERVED = ("http", "push-reactor", "eventarc-target")


@dataclass(frozen=True)
class Thresholds:
    """``vital_signs`` of slos.yaml."""

    max_unacked_age_seconds: dict[str, float]  # subscription (or "default") => seconds
    max_dead_letter_depth: int
    max_eventarc_lag_changes: int

    def unacked_age_of(self, subscription: str) -> float:
        ages = self.max_unacked_age_seconds
        return ages.get(subscription, ages.get("default", 600.0))

    @classmethod
    def load(cls, path: Path | None = None) -> Thresholds:
        vital = yaml.safe_load((path or slos_file()).read_text())["vital_signs"]
        return cls(
            {str(k): float(v) for k, v in vital["max_unacked_age_seconds"].items()},
            int(vital["max_dead_letter_depth"]),
            int(vital["max_eventarc_lag_changes"]),
        )


@dataclass(frozen=True)
class SubscriptionVitals:
    subscription: str
    backlog: int
    oldest_unacked_age_s: float
    dead_letter_depth: int
    max_unacked_age_s: float


@dataclass(frozen=True)
class ServiceVitals:
    service: str
    url: str  # on gcp, the Cloud Run service's name
    up: bool
    restarts: int | None  # by the local supervisor; None on gcp (Cloud Run replaces instances)


@dataclass(frozen=True)
class TriggerVitals:
    trigger: str
    lag_changes: int


@dataclass
class Status:
    subscriptions: list[SubscriptionVitals] = field(default_factory=list)
    services: list[ServiceVitals] = field(default_factory=list)
    eventarc: list[TriggerVitals] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    def judge(self, limits: Thresholds) -> Status:
        """Fill ``breaches``: one line per vital sign past its threshold."""
        self.breaches = [
            *(
                f"{s.subscription}: oldest unacked {s.oldest_unacked_age_s:.0f}s"
                f" > {s.max_unacked_age_s:.0f}s"
                for s in self.subscriptions
                if s.oldest_unacked_age_s > s.max_unacked_age_s
            ),
            *(
                f"{s.subscription}: {s.dead_letter_depth} dead letters"
                for s in self.subscriptions
                if s.dead_letter_depth > limits.max_dead_letter_depth
            ),
            *(f"{s.service}: down" for s in self.services if not s.up),
            *(
                f"eventarc {t.trigger}: {t.lag_changes} changes behind"
                for t in self.eventarc
                if t.lag_changes > limits.max_eventarc_lag_changes
            ),
        ]
        return self


class VitalSigns(ABC):
    """Where a frame's rows come from: one reader per backend."""

    @abstractmethod
    def read(self) -> Status:
        """The vital signs now, not yet judged."""


def _consumers(catalog: Catalog) -> list[str]:
    """The subscriptions shown: every one but the dead-letter keepers (a keeper's backlog is its
    source's dead-letter depth)."""
    keepers = {s.dead_letter_topic for s in catalog.subscriptions.values() if s.dead_letter_topic}
    return sorted(n for n, s in catalog.subscriptions.items() if s.topic not in keepers)


@dataclass(frozen=True)
class EmbeddedVitalSigns(VitalSigns):
    """The embedded runtime in ``settings.data_dir``, as it deploys ``catalog``
    (``supervisor.local_catalog``: what it does not run, such as the legacy writer with no monolith
    configured, has no subscription to read)."""

    settings: Settings
    catalog: Catalog
    limits: Thresholds

    def __post_init__(self) -> None:
        object.__setattr__(self, "catalog", local_catalog(self.catalog, self.settings))

    def read(self) -> Status:
        from meridian.embedded.docstore.changelog import Cursors
        from meridian.embedded.docstore.stores import open_store, store_file
        from meridian.embedded.eventarc import CURSORS_FILE, tailed_store, transport_name
        from meridian.embedded.pubsub.broker import DB_FILE, Broker

        settings, catalog = self.settings, self.catalog
        status = Status()
        if (settings.data_dir / DB_FILE).exists():
            broker = Broker(settings.data_dir, project=settings.project)
            for name in _consumers(catalog):
                m = broker.metrics(name)
                status.subscriptions.append(
                    SubscriptionVitals(
                        name,
                        m.backlog,
                        round(m.oldest_unacked_age_s, 1),
                        m.dead_letter_depth,
                        self.limits.unacked_age_of(name),
                    )
                )
            broker.close()
        # Eventarc's lag: the tailed store's last change past each trigger's cursor.
        tailed = tailed_store(catalog)
        if store_file(settings.data_dir, tailed).exists():
            head = open_store(settings.data_dir, tailed, read_only=True).changes.latest_seq()
            cursors = Cursors(settings.data_dir / CURSORS_FILE)
            for trigger in sorted(catalog.triggers):
                position = cursors.position(transport_name(trigger))
                lag = head - position if position is not None else 0
                status.eventarc.append(TriggerVitals(trigger, max(lag, 0)))
        restarts = read_restarts(settings.data_dir / "logs")
        names = ["platform", *(n for n, s in catalog.services.items() if s.kind in _SERVED)]
        with httpx.Client(timeout=0.5) as client:
            for name in names:
                try:
                    url = settings.url_of(name)
                except KeyError:
                    continue  # not served by the embedded runtime
                try:
                    up = client.get(f"{url}/healthz").status_code == 200
                except httpx.HTTPError:
                    up = False
                # a service's processes: itself and those part of it (the live map's writer)
                mine = [p for p in restarts if p == name or self._part_of(p) == name]
                status.services.append(ServiceVitals(name, url, up, sum(restarts[p] for p in mine)))
        return status

    def _part_of(self, process: str) -> str | None:
        spec = self.catalog.services.get(process)
        return spec.part_of if spec else None


@dataclass(frozen=True)
class CloudMonitoringVitalSigns(VitalSigns):
    """The deployed platform, as Cloud Monitoring recorded it: Pub/Sub's subscription metrics;
    Cloud Run's ``<prefix>-<service>``, down when it has no instance though the catalog keeps
    ``min_instances`` warm, or when every request it answered in the window was a 5xx (one scaled
    to zero with no traffic is up: idle). No Eventarc lag: Eventarc's transport is not in the
    catalog."""

    monitoring: CloudMonitoring
    catalog: Catalog
    limits: Thresholds
    prefix: str

    def read(self) -> Status:
        catalog = self.catalog
        consumers = _consumers(catalog)
        keeper = {
            name: catalog.dead_letters_of(name)
            for name in consumers
            if catalog.subscriptions[name].dead_letter_topic
        }
        signs = self.monitoring.subscription_vital_signs([*consumers, *keeper.values()])
        status = Status()
        for name in consumers:
            own = signs.get(name)
            dead = signs.get(keeper[name]) if name in keeper else None
            status.subscriptions.append(
                SubscriptionVitals(
                    name,
                    own.backlog if own else 0,
                    round(own.oldest_unacked_age_s, 1) if own else 0.0,
                    dead.backlog if dead else 0,
                    self.limits.unacked_age_of(name),
                )
            )
        deployed = {
            f"{self.prefix}-{n}": (n, s.min_instances)
            for n, s in catalog.services.items()
            if s.kind != "pipeline"  # on Dataflow, not Cloud Run
        }
        run = self.monitoring.cloud_run_vital_signs(sorted(deployed))
        for run_name, (name, floor) in sorted(deployed.items(), key=lambda d: d[1][0]):
            seen = run.get(run_name)
            cold = floor > 0 and (seen is None or seen.instances == 0)
            failing = seen is not None and seen.requests > 0 and seen.errors == seen.requests
            status.services.append(ServiceVitals(name, run_name, not (cold or failing), None))
        return status


def render(status: Status, limits: Thresholds) -> Group:
    """The screen: subscriptions, services, Eventarc; red where a vital sign breaches."""
    subs = Table(title="subscriptions", title_justify="left")
    for column in ("subscription", "backlog", "oldest unacked", "dead letters"):
        subs.add_column(column, justify="left" if column == "subscription" else "right")
    for s in status.subscriptions:
        late = s.oldest_unacked_age_s > s.max_unacked_age_s
        dead = s.dead_letter_depth > limits.max_dead_letter_depth
        subs.add_row(
            s.subscription,
            str(s.backlog),
            f"[red]{s.oldest_unacked_age_s:.1f}s[/]" if late else f"{s.oldest_unacked_age_s:.1f}s",
            f"[red]{s.dead_letter_depth}[/]" if dead else str(s.dead_letter_depth),
            style="red" if late or dead else None,
        )
    services = Table(title="services", title_justify="left")
    services.add_column("service")
    services.add_column("url")
    services.add_column("up")
    services.add_column("restarts", justify="right")
    for v in status.services:
        restarts = "-" if v.restarts is None else str(v.restarts)
        services.add_row(v.service, v.url, "up" if v.up else "[red]DOWN[/]", restarts)
    eventarc = Table(title="eventarc", title_justify="left")
    eventarc.add_column("trigger")
    eventarc.add_column("changes behind", justify="right")
    for t in status.eventarc:
        behind = t.lag_changes > limits.max_eventarc_lag_changes
        eventarc.add_row(t.trigger, f"[red]{t.lag_changes}[/]" if behind else str(t.lag_changes))
    verdict = (
        "[red]" + "\n".join(status.breaches) + "[/]"
        if status.breaches
        else "[green]all vital signs within their thresholds[/]"
    )
    return Group(subs, services, eventarc, verdict)


@app.callback()
def status(
    once: Annotated[
        bool, typer.Option("--once", envvar="MERIDIAN_STATUS_ONCE", help="print one frame")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", envvar="MERIDIAN_STATUS_JSON", help="print one frame as JSON"),
    ] = False,
    interval: Annotated[
        float,
        typer.Option(envvar="MERIDIAN_STATUS_INTERVAL", min=0.2, help="seconds between frames"),
    ] = 2.0,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="MERIDIAN_DATA_DIR",
            help="Where the embedded runtime keeps its state.",
        ),
    ] = Path(".meridian"),
    prefix: Annotated[
        str,
        typer.Option(
            "--prefix",
            envvar="MERIDIAN_STATUS_PREFIX",
            help="On gcp: Terraform's prefix of the Cloud Run services' names.",
        ),
    ] = "",
) -> None:
    """Backlogs, oldest unacked ages, dead letters, services up (and restarts) and Eventarc lag,
    red past the thresholds the alerts use (meridian/release/slos.yaml). With MERIDIAN_BACKEND=gcp
    read from Cloud Monitoring in GOOGLE_CLOUD_PROJECT. Exits 1 when one breaches (--once,
    --json)."""
    settings = replace(Settings.from_env(), data_dir=data_dir)
    catalog = load_catalog()
    limits = Thresholds.load()
    reader: VitalSigns
    if settings.backend == "gcp":
        from meridian.gcp.monitoring import CloudMonitoring, authorised_client

        if not prefix:
            typer.secho("on gcp, --prefix (MERIDIAN_STATUS_PREFIX) is needed", fg="red", err=True)
            raise typer.Exit(2)
        from google.auth.exceptions import DefaultCredentialsError

        try:
            monitoring = CloudMonitoring(settings.project, authorised_client())
        except DefaultCredentialsError as no_credentials:
            typer.secho(f"on gcp: {no_credentials}", fg="red", err=True)
            raise typer.Exit(2) from no_credentials
        reader = CloudMonitoringVitalSigns(monitoring, catalog, limits, prefix)
    else:
        reader = EmbeddedVitalSigns(settings, catalog, limits)

    def frame() -> Status:
        return reader.read().judge(limits)

    if as_json:
        now = frame()
        typer.echo(json.dumps(asdict(now), indent=2))
        raise typer.Exit(1 if now.breaches else 0)
    console = Console()
    if once:
        now = frame()
        console.print(render(now, limits))
        raise typer.Exit(1 if now.breaches else 0)
    with Live(render(frame(), limits), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(frame(), limits), refresh=True)
        except KeyboardInterrupt:
            pass
