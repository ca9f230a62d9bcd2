"""``meridian demo``: the platform up, a scripted delivery morning over HTTP, and a summary.

The scenario is what the platform's users do: a client system posts a shipment with its API key,
the dispatch desk assigns parcels, drivers post telemetry and mark parcels out for delivery,
delivered or failed. Meanwhile the demo watches the business events' topic (the catalog's, for
``ParcelDelivered``: ``logistics.events``) through a subscription of its own and prints each
business fact as the event publisher puts it on the bus, with the subscriptions its filters route
it to.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from meridian.app.clients import register_client
from meridian.catalog import Catalog
from meridian.config import Settings
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig

DEPOT = (12.9716, 77.5946)  # central Bengaluru
WATCH = "demo-watch"
WATCHED = "ParcelDelivered"  # the demo watches the topic this event type is published on


@dataclass
class DemoReport:
    topic: str
    commands: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    routed: Counter[str] = field(default_factory=Counter)
    command_ms: list[float] = field(default_factory=list)
    pings: int = 0


class EventWatcher(threading.Thread):
    """Prints every event that reaches the report's topic and where the filters route it."""

    def __init__(
        self, catalog: Catalog, broker: Broker, console: Console, report: DemoReport
    ) -> None:
        super().__init__(daemon=True)
        self.catalog, self.broker, self.console, self.report = catalog, broker, console, report
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            batch = self.broker.pull(WATCH, 100)
            if not batch:
                self.broker.wait(0.2)
                continue
            self.broker.acknowledge(WATCH, [m.ack_id for m in batch])
            for received in batch:
                attributes = received.message.attributes
                receivers = self.catalog.matching_subscriptions(self.report.topic, attributes)
                self.report.events[attributes["eventType"]] += 1
                self.report.routed.update(receivers)
                self.console.print(
                    f"    [cyan]event[/] {attributes['eventType']:<22} {attributes['subject']:<14} "
                    f"→ {', '.join(receivers)}"
                )


def _parcel(rng: random.Random, i: int, now: datetime) -> dict[str, Any]:
    start = now + timedelta(minutes=30 + 20 * (i % 6))
    return {
        "parcel_id": f"p-demo-{i:03d}",
        "recipient": {"name": f"Customer {i}", "phone": f"+9198{rng.randrange(10**7, 10**8)}"},
        "stop": {
            "location": {
                "lat": DEPOT[0] + rng.uniform(-0.08, 0.08),
                "lng": DEPOT[1] + rng.uniform(-0.08, 0.08),
            },
            "address": f"{rng.randrange(1, 400)} {rng.choice(['MG Road', 'Church Street', 'CMH Road'])}",
            "window": {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()},
        },
        "weight_kg": round(rng.uniform(0.2, 12.0), 2),
    }


def run_scenario(
    catalog: Catalog,
    settings: Settings,
    seconds: float,
    console: Console,
    parcel_count: int = 20,
    interrupted: Callable[[], bool] = lambda: False,
) -> DemoReport:
    """Play the morning over about ``seconds`` against the running services."""
    report = DemoReport(topic=catalog.event_types[WATCHED].topic)
    rng = random.Random(7)
    broker = Broker(settings.data_dir, project=settings.project)
    broker.create_subscription(SubscriptionConfig(name=WATCH, topic=report.topic), exist_ok=True)
    watcher = EventWatcher(catalog, broker, console, report)
    watcher.start()
    client_id = f"c-freshmart-{rng.randrange(10**6):06d}"
    api_key = register_client(
        EmbeddedDocumentStore(settings.data_dir), client_id, "Freshmart Grocery"
    )
    issuer = LocalIdentityIssuer(settings.data_dir)
    dispatcher = {"Authorization": f"Bearer {issuer.token('dsp-1', 'dispatcher')}"}
    drivers = {
        f"drv-{d}": {"Authorization": f"Bearer {issuer.token(f'drv-{d}', 'driver')}"}
        for d in range(1, 5)
    }
    command = settings.url_of("command")
    now = datetime.now(UTC)
    pause = seconds / max(1, parcel_count * 3 + 2)

    with httpx.Client(base_url=command, timeout=10) as http:

        def send(
            what: str, path: str, body: dict[str, Any], headers: dict[str, str]
        ) -> dict[str, Any]:
            started = time.perf_counter()
            response = http.post(
                path, json=body, headers={**headers, "Idempotency-Key": f"{path}-{what}"}
            )
            report.command_ms.append((time.perf_counter() - started) * 1000)
            report.commands[what] += 1
            if response.status_code != 202:
                console.print(f"  [red]{what} {path}: {response.status_code} {response.text}[/]")
            return dict(response.json())

        console.print(
            f"[bold]{client_id}[/] posts a shipment of {parcel_count} parcels with its API key"
        )
        shipment = send(
            "create shipment",
            "/v1/shipments",
            {"parcels": [_parcel(rng, i, now) for i in range(parcel_count)]},
            {"X-API-Key": api_key},
        )
        console.print(f"  202 {shipment['shipment_id']}")
        time.sleep(pause)
        for i, parcel_id in enumerate(shipment.get("parcel_ids", [])):
            if interrupted():
                break
            driver = f"drv-{i % 4 + 1}"
            vehicle = f"veh-{i % 4 + 1}"
            console.print(f"[bold]{parcel_id}[/] → {driver} on {vehicle}")
            send(
                "assign",
                f"/v1/parcels/{parcel_id}:assign",
                {
                    "route_id": f"r-demo-{i % 4 + 1}",
                    "driver_id": driver,
                    "vehicle_id": vehicle,
                    "stop_sequence": i // 4,
                },
                dispatcher,
            )
            send(
                "out for delivery",
                f"/v1/parcels/{parcel_id}:out-for-delivery",
                {"vehicle_id": vehicle, "at": datetime.now(UTC).isoformat()},
                drivers[driver],
            )
            time.sleep(pause)
            pings = [
                {
                    "vehicle_id": vehicle,
                    "recorded_at": (datetime.now(UTC) - timedelta(seconds=5 * k)).isoformat(),
                    "position": {
                        "lat": DEPOT[0] + rng.uniform(-0.05, 0.05),
                        "lng": DEPOT[1] + rng.uniform(-0.05, 0.05),
                    },
                    "speed_mps": 8.3,
                }
                for k in range(5)
            ]
            accepted = http.post(
                "/v1/telemetry", json={"pings": pings}, headers=drivers[driver]
            ).json()
            report.pings += accepted.get("accepted", 0)
            time.sleep(pause)
            if i % 5 == 4:
                send(
                    "fail",
                    f"/v1/parcels/{parcel_id}:fail",
                    {
                        "vehicle_id": vehicle,
                        "failed_at": datetime.now(UTC).isoformat(),
                        "reason": "recipient not at home",
                    },
                    drivers[driver],
                )
            else:
                send(
                    "deliver",
                    f"/v1/parcels/{parcel_id}:deliver",
                    {
                        "vehicle_id": vehicle,
                        "delivered_at": datetime.now(UTC).isoformat(),
                        "position": {"lat": DEPOT[0], "lng": DEPOT[1]},
                        "pod": {"signature_ref": f"sig/{parcel_id}.png"},
                    },
                    drivers[driver],
                )
            time.sleep(pause)
    deadline = time.monotonic() + 5  # let the last events reach the bus
    while time.monotonic() < deadline and sum(report.events.values()) < sum(
        report.commands.values()
    ):
        time.sleep(0.2)
    watcher.stopping.set()
    watcher.join(timeout=2)
    return report


def print_summary(report: DemoReport, console: Console) -> None:
    commands = Table(title="Commands accepted (202)")
    commands.add_column("command")
    commands.add_column("count", justify="right")
    for name, count in sorted(report.commands.items()):
        commands.add_row(name, str(count))
    events = Table(title=f"Events on {report.topic}")
    events.add_column("event type")
    events.add_column("count", justify="right")
    for name, count in sorted(report.events.items()):
        events.add_row(name, str(count))
    routed = Table(title="Routed by subscription filters")
    routed.add_column("subscription")
    routed.add_column("events", justify="right")
    for name, count in sorted(report.routed.items()):
        routed.add_row(name, str(count))
    console.print(commands, events, routed)
    if report.command_ms:
        ordered = sorted(report.command_ms)
        console.print(
            f"command latency at the client: p50 {ordered[len(ordered) // 2]:.1f} ms, "
            f"max {ordered[-1]:.1f} ms; {report.pings} telemetry pings accepted"
        )
