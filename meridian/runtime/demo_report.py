"""What ``meridian demo`` watches and reports: its story line, the events it counts, the example
webhook receiver it runs as a client system would, and the summary tables (the day itself is told
in ``demo.py``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from meridian.catalog import Catalog
from meridian.codec.events import EventCodec
from meridian.config import environment
from meridian.domain.events import GeofenceCrossed
from meridian.embedded.pubsub.broker import Broker


@dataclass
class DemoReport:
    topic: str
    commands: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    command_ms: list[float] = field(default_factory=list)
    pings: int = 0
    window: str = ""
    window_status: str = "not opened"
    routes: int = 0
    crossings: int = 0
    effects: dict[str, tuple[str, int]] = field(default_factory=dict)


class Story:
    """One line per step, stamped with the clock and the seconds since ``started``."""

    def __init__(self, console: Console, started: float) -> None:
        self.console, self.started = console, started

    def tell(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.console.print(f"[dim]{stamp} +{time.monotonic() - self.started:5.1f}s[/] {text}")


class EventWatcher(threading.Thread):
    """Counts every event on the report's topic; tells the geofence crossings."""

    def __init__(
        self,
        catalog: Catalog,
        broker: Broker,
        story: Story,
        report: DemoReport,
        subscription: str,
        fence_names: Mapping[str, str],
    ) -> None:
        super().__init__(daemon=True)
        self.subscription = subscription
        self.codec, self.broker, self.story, self.report = (
            EventCodec(catalog),
            broker,
            story,
            report,
        )
        self.names = dict(fence_names)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            batch = self.broker.pull(self.subscription, 100)
            if not batch:
                self.broker.wait(0.2)
                continue
            self.broker.acknowledge(self.subscription, [m.ack_id for m in batch])
            for received in batch:
                attributes = received.message.attributes
                self.report.events[attributes["eventType"]] += 1
                if attributes["eventType"] != GeofenceCrossed.__name__:
                    continue
                event = self.codec.from_message(received.message.data, attributes)
                assert isinstance(event, GeofenceCrossed)
                if event.geofence_id in self.names:
                    self.report.crossings += 1
                    verb = "enters" if event.direction.value == "ENTER" else "leaves"
                    self.story.tell(
                        f"[magenta]geofence[/] {event.vehicle_id} {verb} "
                        f"{self.names[event.geofence_id]} (GeofenceCrossed)"
                    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WebhookReceiver:
    """``examples/webhook_receiver.py`` in a subprocess, as a client system would run it; counts
    the deliveries it verified and those it refused."""

    def __init__(self, script: Path, secret: str, port: int, story: Story) -> None:
        self.story = story
        self.verified = 0
        self.refused = 0
        self.listening = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            env={**environment(), "WEBHOOK_SECRET": secret, "RECEIVER_PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("webhook receiver listening"):
                self.listening.set()
            elif line.startswith("verified "):
                self.verified += 1
                self.story.tell(f"[green]client receiver[/] {line.strip()}")

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if line.startswith("refused"):
                self.refused += 1
                self.story.tell(f"[red]client receiver[/] {line.strip()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def print_summary(report: DemoReport, console: Console) -> None:
    day = Table(title="The day")
    day.add_column("what")
    day.add_column("", justify="right")
    day.add_row(f"dispatch window {report.window}", report.window_status)
    day.add_row("routes confirmed", str(report.routes))
    day.add_row("parcels delivered", str(report.commands["deliver"]))
    day.add_row("deliveries failed", str(report.commands["fail"]))
    day.add_row("telemetry pings accepted", str(report.pings))
    day.add_row("geofence crossings", str(report.crossings))
    effects = Table(title="Effects per reactor")
    effects.add_column("reactor")
    effects.add_column("effect")
    effects.add_column("count", justify="right")
    for reactor, (what, count) in report.effects.items():
        effects.add_row(reactor, what, str(count))
    events = Table(title=f"Events on {report.topic}")
    events.add_column("event type")
    events.add_column("count", justify="right")
    for name, count in sorted(report.events.items()):
        events.add_row(name, str(count))
    console.print(day, effects, events)
    if report.command_ms:
        ordered = sorted(report.command_ms)
        console.print(
            f"command latency at the client: p50 {ordered[len(ordered) // 2]:.1f} ms, "
            f"max {ordered[-1]:.1f} ms"
        )
