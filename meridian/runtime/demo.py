"""``meridian demo``: the platform up, a scripted delivery day, and a summary at the end.

The scenario walks a shipment's parcels through their whole life (plan, assign, out for
delivery, delivered or failed, re-queued or returned) on the domain core, encodes every resulting
event with the catalog's Avro schemas, and fans each one out through the real subscription
filters, so the summary shows which reactor receives what. As the broker and services land, the
same steps run through them.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from rich.console import Console
from rich.table import Table

from meridian.catalog import Catalog
from meridian.codec import EventCodec
from meridian.config import Settings
from meridian.domain import events as ev
from meridian.domain.events import DomainEvent, derive_event_id
from meridian.domain.model import GeoPoint, Parcel, ProofOfDelivery, Recipient, Stop, TimeWindow
from meridian.domain.states import ParcelStatus

DEPOT = GeoPoint(lat=12.9716, lng=77.5946)  # a depot in central Bengaluru


@dataclass
class DemoReport:
    events: Counter[str] = field(default_factory=Counter)
    bytes_by_type: Counter[str] = field(default_factory=Counter)
    routed: Counter[str] = field(default_factory=Counter)
    final_states: Counter[str] = field(default_factory=Counter)


def _parcels(rng: random.Random, count: int, now: datetime) -> list[Parcel]:
    parcels = []
    for i in range(count):
        start = now + timedelta(hours=1 + i % 3)
        parcels.append(
            Parcel(
                parcel_id=f"p-demo-{i:03d}",
                shipment_id="s-demo-1",
                client_id="c-freshmart",
                recipient=Recipient(
                    name=f"Customer {i}", phone=f"+9198{rng.randrange(10**7, 10**8)}"
                ),
                stop=Stop(
                    location=GeoPoint(
                        lat=DEPOT.lat + rng.uniform(-0.08, 0.08),
                        lng=DEPOT.lng + rng.uniform(-0.08, 0.08),
                    ),
                    address=f"{rng.randrange(1, 400)} {rng.choice(['MG Road', 'Church St', 'Indiranagar 100ft Rd'])}",
                    window=TimeWindow(start=start, end=start + timedelta(hours=2)),
                ),
                weight_kg=round(rng.uniform(0.2, 12.0), 2),
            )
        )
    return parcels


def delivery_day(rng: random.Random, parcel_count: int) -> Iterator[tuple[str, DomainEvent]]:
    """The scripted day, as (what happened, event) pairs in the order they happen."""
    now = datetime.now(UTC)
    parcels = _parcels(rng, parcel_count, now)
    yield (
        "shipment accepted",
        ev.ShipmentCreated(
            event_id=derive_event_id("shipments/s-demo-1", "created"),
            occurred_at=now,
            shipment_id="s-demo-1",
            client_id="c-freshmart",
            parcel_ids=tuple(p.parcel_id for p in parcels),
        ),
    )

    def fact(cls: type[DomainEvent], parcel: Parcel, **fields: object) -> DomainEvent:
        moment = datetime.now(UTC)
        return cls.model_validate(
            {
                "event_id": derive_event_id(
                    f"parcels/{parcel.parcel_id}", parcel.status, moment.isoformat()
                ),
                "occurred_at": moment,
                "parcel_id": parcel.parcel_id,
                "shipment_id": parcel.shipment_id,
                "client_id": parcel.client_id,
                **fields,
            }
        )

    yield (
        "dispatch window opened",
        ev.DispatchWindowOpened(
            event_id=derive_event_id("dispatch_windows/w-demo-1"),
            occurred_at=now,
            window_id="w-demo-1",
            opened_by="dsp-1",
            starts_at=now,
            ends_at=now + timedelta(hours=8),
        ),
    )
    for i, parcel in enumerate(parcels):
        driver, vehicle = f"drv-{i % 4 + 1}", f"veh-{i % 4 + 1}"
        parcel = parcel.plan("w-demo-1")
        yield f"{parcel.parcel_id} planned", fact(ev.ParcelPlanned, parcel, window_id="w-demo-1")
        parcel = parcel.assign(f"r-demo-{i % 4 + 1}", driver, vehicle)
        yield (
            f"{parcel.parcel_id} assigned to {driver}",
            fact(
                ev.ParcelAssigned,
                parcel,
                window_id=parcel.window_id,
                route_id=parcel.route_id,
                driver_id=driver,
                vehicle_id=vehicle,
            ),
        )
        parcel = parcel.send_out()
        stop = parcel.stop
        yield (
            f"{parcel.parcel_id} out for delivery",
            fact(
                ev.ParcelOutForDelivery,
                parcel,
                route_id=parcel.route_id,
                driver_id=driver,
                vehicle_id=vehicle,
                recipient_phone=parcel.recipient.phone,
                lat=stop.location.lat,
                lng=stop.location.lng,
                address=stop.address,
                window_start=stop.window.start,
                window_end=stop.window.end,
                attempt=parcel.attempts,
            ),
        )
        yield (
            f"{vehicle} ping",
            ev.VehiclePing(
                event_id=derive_event_id(vehicle, str(i)),
                occurred_at=datetime.now(UTC),
                vehicle_id=vehicle,
                driver_id=driver,
                lat=stop.location.lat,
                lng=stop.location.lng,
                speed_mps=8.3,
                heading_deg=90.0,
                recorded_at=datetime.now(UTC),
            ),
        )
        if i % 5 == 4:
            parcel = parcel.fail("recipient not at home")
            yield (
                f"{parcel.parcel_id} delivery failed",
                fact(
                    ev.DeliveryFailed,
                    parcel,
                    route_id=parcel.route_id,
                    driver_id=driver,
                    vehicle_id=vehicle,
                    failed_at=datetime.now(UTC),
                    reason="recipient not at home",
                    attempt=parcel.attempts,
                    recipient_phone=parcel.recipient.phone,
                ),
            )
            if i % 10 == 4:
                parcel = parcel.requeue()
                yield (
                    f"{parcel.parcel_id} re-queued",
                    fact(
                        ev.ParcelRequeued,
                        parcel,
                        previous_status="DELIVERY_FAILED",
                        reason="retry tomorrow",
                    ),
                )
            else:
                parcel = parcel.return_to_sender()
                yield (
                    f"{parcel.parcel_id} returned",
                    fact(ev.ParcelReturned, parcel, reason="refused"),
                )
        else:
            parcel = parcel.deliver(
                datetime.now(UTC),
                stop.location,
                ProofOfDelivery(signature_ref=f"sig/{parcel.parcel_id}.png"),
            )
            yield (
                f"{parcel.parcel_id} delivered",
                fact(
                    ev.ParcelDelivered,
                    parcel,
                    route_id=parcel.route_id,
                    driver_id=driver,
                    vehicle_id=vehicle,
                    delivered_at=parcel.delivered_at,
                    lat=stop.location.lat,
                    lng=stop.location.lng,
                    window_end=stop.window.end,
                    recipient_phone=parcel.recipient.phone,
                    pod_signature_ref=parcel.pod.signature_ref if parcel.pod else None,
                ),
            )
        assert parcel.status in (
            ParcelStatus.DELIVERED,
            ParcelStatus.RETURNED,
            ParcelStatus.CREATED,
        )


def run_scenario(
    catalog: Catalog,
    settings: Settings,
    seconds: float,
    console: Console,
    parcel_count: int = 20,
    sleep: Callable[[float], None] = time.sleep,
    interrupted: Callable[[], bool] = lambda: False,
) -> DemoReport:
    """Play the delivery day over about ``seconds``, printing each fact and where it fans out."""
    codec = EventCodec(catalog)
    report = DemoReport()
    with httpx.Client(timeout=5.0) as client:
        served = client.get(f"{settings.url_of('platform')}/v1/topology").json()
    console.print(
        f"[bold]platform[/] serves {len(served['topics'])} topics, "
        f"{len(served['event_types'])} event types, {len(served['subscriptions'])} subscriptions"
    )
    day = list(delivery_day(random.Random(7), parcel_count))
    pause = seconds / max(1, len(day))
    for what, event in day:
        if interrupted():
            console.print("scenario interrupted")
            break
        message = codec.to_message(event)
        decoded = codec.from_message(message.data, message.attributes)
        if decoded != event:
            raise AssertionError(f"{event.event_type} did not survive an Avro round trip")
        topic = catalog.event_types[event.event_type].topic
        receivers = catalog.matching_subscriptions(topic, message.attributes)
        report.events[event.event_type] += 1
        report.bytes_by_type[event.event_type] += len(message.data)
        report.routed.update(receivers)
        console.print(
            f"  {what:<38} [cyan]{event.event_type:<22}[/] {len(message.data):>4} B → "
            f"{', '.join(receivers) or '(no subscriber)'}"
        )
        sleep(pause)
    for _, event in day:
        if event.event_type in ("ParcelDelivered", "ParcelReturned", "ParcelRequeued"):
            report.final_states[event.event_type] += 1
    return report


def print_summary(report: DemoReport, console: Console) -> None:
    events = Table(title="Events recorded")
    events.add_column("event type")
    events.add_column("count", justify="right")
    events.add_column("avg Avro bytes", justify="right")
    for event_type, count in sorted(report.events.items()):
        events.add_row(event_type, str(count), f"{report.bytes_by_type[event_type] / count:.0f}")
    routed = Table(title="Fan-out by subscription (filters applied)")
    routed.add_column("subscription")
    routed.add_column("messages", justify="right")
    for name, count in sorted(report.routed.items()):
        routed.add_row(name, str(count))
    console.print(events, routed)
    console.print(
        "parcels ended: " + ", ".join(f"{k} {v}" for k, v in sorted(report.final_states.items()))
    )
