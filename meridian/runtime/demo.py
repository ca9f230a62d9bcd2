"""``meridian demo``: the platform up, a delivery day told as a story, and what it caused.

Each step prints one line, stamped with the clock and the seconds since the demo started:

1. the dispatcher console's URL with a dispatcher token, to watch the day on the live map;
2. a client system (with its API key) registers a webhook endpoint, and the example receiver
   (``examples/webhook_receiver.py``) runs as a subprocess, verifying each delivery's signature;
3. the dispatch desk registers its fleet: drivers, vehicles and three neighbourhoods' geofences,
   through the fleet admin API (``POST /v1/drivers``, ``/v1/vehicles``, ``/v1/geofences``), or,
   on a command service without it, as the very documents that API writes;
4. the client posts a shipment whose parcels lie in those neighbourhoods; the desk opens a
   dispatch window, the saga (``workflows/dispatch.yaml``) plans routes and offers them, and
   each driver accepts through the command service (the saga's acceptance callback);
5. the drivers take their parcels out; the fleet simulator (``RouteFleet``, posting with a
   gateway token) drives each route through the geofences, and at each stop the driver marks the
   parcel delivered (one recipient is not at home: a failed delivery). The geofence job's
   crossings are read off the business events' topic through a subscription of the demo's own;
6. the effects are collected per reactor (route boards, texts from the SMS stand-in's
   ``GET /v1/messages``, charges from the billing stand-in's ``GET /v1/charges``, proofs of
   delivery, webhooks the receiver verified, driver scores) and summarised in tables.

The services need two settings for this (``service_environment``): the webhook allow list names
loopback, where the receiver listens, and the geofence job reloads fences every two seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from meridian.app import dispatch_records as rec
from meridian.app.clients import register_client
from meridian.catalog import Catalog
from meridian.config import Settings
from meridian.embedded.docstore.stores import ServiceStores, all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.ports import Query
from meridian.runtime.demo_report import (
    DemoReport,
    EventWatcher,
    Story,
    WebhookReceiver,
    free_port,
)
from meridian.runtime.sim import (
    HttpSink,
    RouteFleet,
    SimOptions,
    SimReport,
    SimRoute,
    distance_m,
    offset,
    run_fleet,
)

DEPOT = (12.9716, 77.5946)  # central Bengaluru
WATCH = "demo-watch"
WATCHED = "ParcelDelivered"  # the demo watches the topic this event type is published on
RECEIVER = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"
DRIVERS = 3
CRUISE_MPS = 55.0  # a time-lapse, yet under the geofence job's plausible 70 m/s
DWELL_S = 0.5
PING_S = 0.5
SETTLE_S = 5.0  # kept after the drive for the last effects to show


@dataclass(frozen=True)
class Zone:
    """A neighbourhood: a circular geofence whose parcels the demo places inside it."""

    fence_id: str
    name: str
    north_m: float
    east_m: float
    radius_m: float = 140.0

    @property
    def centre(self) -> tuple[float, float]:
        return offset(*DEPOT, self.north_m, self.east_m)

    def polygon(self) -> dict[str, Any]:
        """The fence as a closed GeoJSON ring of 24 vertices round the centre."""
        ring = [
            offset(*self.centre, self.radius_m * math.cos(a), self.radius_m * math.sin(a))
            for a in (2 * math.pi * k / 24 for k in range(24))
        ]
        coordinates = [[round(lng, 7), round(lat, 7)] for lat, lng in ring]
        return {"type": "Polygon", "coordinates": [[*coordinates, coordinates[0]]]}


ZONES = (
    Zone("zone-indiranagar", "Indiranagar", 160, 160),
    Zone("zone-koramangala", "Koramangala", -200, 100),
    Zone("zone-malleswaram", "Malleswaram", 60, -220),
)


def service_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What the demo adds to its services' environment: loopback on the webhook allow list
    (the receiver listens there; in production internal addresses are refused) and a geofence
    job that picks new fences up in two seconds rather than ten."""
    allowed = [n for n in environ.get("MERIDIAN_WEBHOOK_ALLOW_NETWORKS", "").split(",") if n]
    return {
        "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": ",".join(dict.fromkeys([*allowed, "127.0.0.1"])),
        "GEOFENCE_FENCE_REFRESH_S": environ.get("GEOFENCE_FENCE_REFRESH_S", "2"),
        "GEOFENCE_ALLOWED_LATENESS_S": environ.get("GEOFENCE_ALLOWED_LATENESS_S", "2"),
    }


@dataclass(frozen=True)
class Stop:
    parcel_id: str
    location: tuple[float, float]


@dataclass(frozen=True)
class PlannedRoute:
    route_id: str
    driver_id: str
    vehicle_id: str
    stops: tuple[Stop, ...]


def _parcel(rng: random.Random, parcel_id: str, i: int, now: datetime) -> dict[str, Any]:
    zone = ZONES[i % len(ZONES)]
    k = i // len(ZONES)  # a spiral inside the zone, the k-th parcel a little further out
    lat, lng = offset(
        *zone.centre, (30 + 18 * k) * math.cos(2.4 * k), (30 + 18 * k) * math.sin(2.4 * k)
    )
    return {
        "parcel_id": parcel_id,
        "recipient": {"name": f"Customer {i}", "phone": f"+9198{rng.randrange(10**7, 10**8)}"},
        "stop": {
            "location": {"lat": round(lat, 6), "lng": round(lng, 6)},
            "address": f"{rng.randrange(1, 400)} {zone.name} Main Road",
            "window": {"start": now.isoformat(), "end": (now + timedelta(hours=3)).isoformat()},
        },
        "weight_kg": round(rng.uniform(0.2, 12.0), 2),
    }


def _document(body: dict[str, Any]) -> dict[str, Any]:
    """A fleet API body as the document the API writes (a fence's geometry as a string)."""
    if "geometry" in body:
        return {**body, "geometry": json.dumps(body["geometry"])}
    return body


def _fleet(suffix: str, parcels: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, document path, API body) of the fleet: drivers, vehicles, geofences."""
    depot = {"lat": DEPOT[0], "lng": DEPOT[1]}
    fleet: list[tuple[str, str, dict[str, Any]]] = []
    for d in range(1, DRIVERS + 1):
        driver = f"drv-{suffix}-{d}"
        fleet.append(
            (
                "drivers",
                f"{rec.DRIVERS}/{driver}",
                {
                    "driver_id": driver,
                    "name": f"Driver {d}",
                    "phone": f"+91980000000{d}",
                    "status": "AVAILABLE",
                },
            )
        )
    for v in range(1, DRIVERS + 1):
        vehicle = f"veh-{suffix}-{v}"
        fleet.append(
            (
                "vehicles",
                f"{rec.VEHICLES}/{vehicle}",
                {
                    "vehicle_id": vehicle,
                    "capacity_kg": 500.0,
                    "capacity_parcels": max(1, math.ceil(parcels / DRIVERS)),
                    "depot": depot,
                    "status": "AVAILABLE",
                },
            )
        )
    for zone in ZONES:
        fence = {"fence_id": zone.fence_id, "name": zone.name, "geometry": zone.polygon()}
        fleet.append(("geofences", f"geofences/{zone.fence_id}", fence))
    return fleet


class Day:
    """The scenario's state and its HTTP calls against the running services."""

    def __init__(
        self, catalog: Catalog, settings: Settings, story: Story, report: DemoReport
    ) -> None:
        self.settings, self.story, self.report = settings, story, report
        self.store = all_stores(settings.data_dir)
        self.issuer = LocalIdentityIssuer(settings.data_dir)
        self.http = httpx.Client(base_url=settings.url_of("command"), timeout=10)
        self.dispatcher = self.headers("dispatcher", "dsp-1")

    def headers(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.token(subject, role)}"}

    def send(
        self,
        what: str,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        key: str | None = None,
    ) -> httpx.Response:
        """POST a command with an idempotency key (``path`` and ``what`` unless ``key``)."""
        started = time.perf_counter()
        response = self.http.post(
            path, json=body, headers={**headers, "Idempotency-Key": key or f"{path}-{what}"}
        )
        self.report.command_ms.append((time.perf_counter() - started) * 1000)
        if response.is_success:
            self.report.commands[what] += 1
        else:
            self.story.tell(f"[red]{what} {path}: {response.status_code} {response.text}[/]")
        return response

    def register_fleet(self, suffix: str, parcels: int) -> str:
        """Through the fleet admin API where the command service has it, else as the documents
        it writes; says which."""
        fleet = _fleet(suffix, parcels)
        written: list[str] = []
        for kind, path, body in fleet:
            answer = self.http.post(
                f"/v1/{kind}",
                json=body,
                headers={**self.dispatcher, "Idempotency-Key": f"register-{path}"},
            )
            if answer.is_success:
                self.report.commands[f"register {kind[:-1]}"] += 1
                continue
            if answer.status_code not in (404, 405):  # the API refused it: say so, go on
                self.story.tell(f"[red]POST /v1/{kind}: {answer.status_code} {answer.text}[/]")
            self.store.set(path, _document(body))
            written.append(path.split("/")[0])
        if not written:
            return "through the fleet admin API"
        if len(written) == len(fleet):
            return "as documents (this command service has no fleet admin API)"
        return f"through the fleet admin API ({', '.join(sorted(set(written)))} as documents)"

    def answer_offers(self, window_id: str, until: float) -> dict[str, Any]:
        """Each driver offered a route accepts it; returns the window once the saga settled."""
        answered: set[str] = set()
        while True:
            offers = self.store.query(Query(rec.ASSIGNMENTS).where("window_id", "==", window_id))
            for offer in sorted(
                (dict(o.data) for o in offers), key=lambda o: str(o["assignment_id"])
            ):
                if offer["status"] != "OFFERED" or offer["assignment_id"] in answered:
                    continue
                answered.add(offer["assignment_id"])
                response = self.send(
                    "accept route",
                    f"/v1/assignments/{offer['assignment_id']}:accept",
                    {},
                    self.headers("driver", offer["driver_id"]),
                )
                if response.status_code == 202:
                    self.story.tell(
                        f"{offer['driver_id']} accepts route {offer['route_id']} on {offer['vehicle_id']}"
                    )
            window = self.http.get(f"/v1/dispatch-windows/{window_id}", headers=self.dispatcher)
            body: dict[str, Any] = window.json() if window.status_code == 200 else {}
            if body.get("status") in ("DISPATCHED", "FAILED") or time.monotonic() > until:
                return body
            time.sleep(0.2)

    def confirmed_routes(self, window_id: str) -> list[PlannedRoute]:
        routes = []
        for doc in self.store.query(Query(rec.ROUTES).where("window_id", "==", window_id)):
            if doc.data["status"] != "CONFIRMED":
                continue
            stops = sorted(doc.data["stops"], key=lambda s: int(s["sequence"]))
            routes.append(
                PlannedRoute(
                    doc.data["route_id"],
                    doc.data["driver_id"],
                    doc.data["vehicle_id"],
                    tuple(
                        Stop(s["parcel_id"], (s["location"]["lat"], s["location"]["lng"]))
                        for s in stops
                    ),
                )
            )
        return sorted(routes, key=lambda r: r.route_id)


def _drive_seconds(routes: list[PlannedRoute]) -> float:
    """How long the slowest route takes, out and back, at the slowest cruising speed."""
    longest = 0.0
    for route in routes:
        path = [DEPOT, *(s.location for s in route.stops), DEPOT]
        metres = sum(distance_m(a, b) for a, b in itertools.pairwise(path))
        longest = max(longest, metres / (CRUISE_MPS * 0.85) + DWELL_S * len(route.stops))
    return longest + 2 * PING_S


def run_scenario(
    catalog: Catalog,
    settings: Settings,
    seconds: float,
    console: Console,
    parcel_count: int = 9,
    interrupted: Callable[[], bool] = lambda: False,
    started: float | None = None,
) -> DemoReport:
    """Play the day within about ``seconds`` against the running services."""
    deadline = time.monotonic() + seconds
    story = Story(console, time.monotonic() if started is None else started)
    report = DemoReport(topic=catalog.event_types[WATCHED].topic)
    suffix = os.urandom(3).hex()
    rng = random.Random(7)
    broker = Broker(settings.data_dir, project=settings.project)
    broker.create_subscription(SubscriptionConfig(name=WATCH, topic=report.topic), exist_ok=True)
    watcher = EventWatcher(
        catalog, broker, story, report, WATCH, {zone.fence_id: zone.name for zone in ZONES}
    )
    watcher.start()
    day = Day(catalog, settings, story, report)
    console_token = day.issuer.token("dsp-1", "dispatcher")
    story.tell(
        f"[bold]watch it live[/]: {settings.url_of('live-map')}/dispatch#token={console_token}"
    )
    receiver: WebhookReceiver | None = None
    try:
        client_id = f"c-freshmart-{suffix}"
        api_key = register_client(day.store, client_id, "Freshmart Grocery")
        story.tell(f"client [bold]{client_id}[/] gets its API key")
        if RECEIVER.exists():
            port = free_port()
            registered = day.http.post(
                f"/v1/clients/{client_id}/webhooks",
                json={
                    "url": f"http://127.0.0.1:{port}/meridian",
                    "event_types": ["ParcelDelivered", "DeliveryFailed"],
                },
                headers={"X-API-Key": api_key},
            )
            if registered.status_code == 201:
                receiver = WebhookReceiver(RECEIVER, registered.json()["secret"], port, story)
                receiver.listening.wait(10)
                story.tell(
                    f"{client_id} registers a webhook endpoint; examples/webhook_receiver.py "
                    f"verifies its deliveries on port {port}"
                )
            else:
                story.tell(
                    f"[red]webhook registration: {registered.status_code} {registered.text}[/]"
                )
        else:
            story.tell("examples/webhook_receiver.py is not here (an installed wheel): no receiver")

        how = day.register_fleet(suffix, parcel_count)
        story.tell(
            f"the desk registers {DRIVERS} drivers, {DRIVERS} vehicles at the depot and "
            f"{len(ZONES)} geofences ({', '.join(z.name for z in ZONES)}) {how}"
        )

        now = datetime.now(UTC)
        parcels = [_parcel(rng, f"p-demo-{suffix}-{i:02d}", i, now) for i in range(parcel_count)]
        story.tell(
            f"[bold]{client_id}[/] posts a shipment of {parcel_count} parcels with its API key"
        )
        shipment = day.send(
            "create shipment", "/v1/shipments", {"parcels": parcels}, {"X-API-Key": api_key}
        )
        if shipment.status_code != 202:
            return report

        report.window = f"w-demo-{suffix}"
        body = {
            "window_id": report.window,
            "depot": {"lat": DEPOT[0], "lng": DEPOT[1]},
            "window": {
                "start": (now - timedelta(minutes=5)).isoformat(),
                "end": (now + timedelta(hours=10)).isoformat(),
            },
            "solve_time_limit_s": 1.0,
            "offer_timeout_s": 60,
            "max_offers": 3,
        }
        if (
            day.send(
                "open dispatch window", "/v1/dispatch-windows", body, day.dispatcher
            ).status_code
            != 202
        ):
            return report
        story.tell(
            f"the desk opens dispatch window {report.window}: the saga reserves, plans and offers routes"
        )
        window = day.answer_offers(report.window, min(deadline, time.monotonic() + 30))
        report.window_status = str(window.get("status", "unknown"))
        routes = day.confirmed_routes(report.window)
        report.routes = len(routes)
        story.tell(
            f"window {report.window} {report.window_status}: {_count(len(routes), 'route')} "
            f"confirmed, {_count(sum(len(r.stops) for r in routes), 'parcel')} assigned"
        )
        if not routes or interrupted():
            return report

        for route in routes:
            driver = day.headers("driver", route.driver_id)
            for stop in route.stops:
                day.send(
                    "out for delivery",
                    f"/v1/parcels/{stop.parcel_id}:out-for-delivery",
                    {"vehicle_id": route.vehicle_id, "at": datetime.now(UTC).isoformat()},
                    driver,
                )
            story.tell(
                f"{route.driver_id} sets off in {route.vehicle_id} with {len(route.stops)} parcels"
            )
        drive_s = min(_drive_seconds(routes), deadline - time.monotonic() - SETTLE_S)
        _drive(day, routes, drive_s, interrupted)
        _collect_effects(day, report, routes, receiver, client_id, parcels, deadline)
        return report
    finally:
        watcher.stopping.set()
        watcher.join(timeout=2)
        if receiver is not None:
            receiver.stop()
        day.http.close()
        _retire(day.store, suffix)


def _drive(
    day: Day, routes: list[PlannedRoute], seconds: float, interrupted: Callable[[], bool]
) -> None:
    """The simulator drives every route; at each stop its driver delivers, except the last
    stop of the first route, whose recipient is not at home."""
    plans = {route.vehicle_id: route for route in routes}
    failing = routes[0].stops[-1].parcel_id
    fleet = RouteFleet(
        SimOptions(ping_interval_s=PING_S, seed=7),
        routes=[
            SimRoute(r.vehicle_id, DEPOT, tuple(s.location for s in r.stops), CRUISE_MPS)
            for r in routes
        ],
        dwell_s=DWELL_S,
    )
    gateway = day.issuer.token("gw-demo", "gateway")
    sink = HttpSink(str(day.http.base_url), lambda _: gateway)
    day.story.tell(
        f"the fleet simulator drives {_count(len(routes), 'route')} (a time-lapse at {CRUISE_MPS:.0f} m/s), "
        f"pinging /v1/telemetry as the fleet gateway"
    )

    def at_stops(report: SimReport) -> None:
        day.report.pings = report.accepted
        while fleet.arrivals:
            vehicle, index = fleet.arrivals.pop(0)
            route = plans[vehicle]
            stop = route.stops[index]
            driver = day.headers("driver", route.driver_id)
            now = datetime.now(UTC).isoformat()
            body: dict[str, Any]
            if stop.parcel_id == failing:
                body = {"vehicle_id": vehicle, "failed_at": now, "reason": "recipient not at home"}
                day.send("fail", f"/v1/parcels/{stop.parcel_id}:fail", body, driver)
                day.story.tell(
                    f"[red]{route.driver_id}[/] cannot deliver {stop.parcel_id}: recipient not at home"
                )
                continue
            body = {
                "vehicle_id": vehicle,
                "delivered_at": now,
                "position": {"lat": stop.location[0], "lng": stop.location[1]},
                "pod": {"signature_ref": f"sig/{stop.parcel_id}.png"},
            }
            day.send("deliver", f"/v1/parcels/{stop.parcel_id}:deliver", body, driver)
            day.story.tell(
                f"{route.driver_id} delivers {stop.parcel_id} (stop {index + 1} of {len(route.stops)})"
            )

    async def main() -> None:
        try:
            await run_fleet(fleet, sink, max(1.0, seconds), tick_s=PING_S / 2, on_tick=at_stops)
        finally:
            await sink.close()

    if not interrupted():
        asyncio.run(main())


def _collect_effects(
    day: Day,
    report: DemoReport,
    routes: list[PlannedRoute],
    receiver: WebhookReceiver | None,
    client_id: str,
    parcels: list[dict[str, Any]],
    until: float,
) -> None:
    """What each reactor did for this day, read where its effect lands; waits (until ``until``)
    for every effect to show, every delivery's and failure's webhook, and each vehicle's way
    into its neighbourhood and out again."""
    phones = {p["recipient"]["phone"] for p in parcels}
    parcel_ids = [s.parcel_id for r in routes for s in r.stops]
    attempts = report.commands["deliver"] + report.commands["fail"]
    with httpx.Client(timeout=5) as http:
        while True:
            texts = [
                m
                for m in http.get(f"{day.settings.url_of('sms-gateway')}/v1/messages").json()
                if m.get("to") in phones
            ]
            charges = [
                c
                for c in http.get(f"{day.settings.url_of('billing-api')}/v1/charges").json()
                if c.get("client_id") == client_id
            ]
            report.effects = {
                "eta": (
                    "route boards",
                    _existing(day, "route_board", [r.route_id for r in routes]),
                ),
                "notification": ("texts sent", len(texts)),
                "billing": ("charges", len(charges)),
                "pod": ("proofs of delivery", _existing(day, "pod_records", parcel_ids)),
                "webhook": ("webhooks verified", receiver.verified if receiver else 0),
                "driver-scoring": (
                    "driver scores",
                    _existing(day, "driver_scores", [r.driver_id for r in routes]),
                ),
            }
            everything = all(count for _, count in report.effects.values())
            delivered = report.commands["deliver"]
            done = (
                report.effects["webhook"][1] >= attempts
                and report.effects["billing"][1] >= delivered  # one charge per delivery
                and report.effects["pod"][1] >= delivered
                and report.crossings >= 2 * len(routes)
            )
            if (everything and done) or time.monotonic() > until:
                return
            time.sleep(0.3)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _existing(day: Day, collection: str, ids: list[str]) -> int:
    return sum(day.store.get(f"{collection}/{i}") is not None for i in ids)


def _retire(store: ServiceStores, suffix: str) -> None:
    """Take the day's fleet out of service, so the next demo on this data dir plans its own."""
    for collection, status in ((rec.DRIVERS, "OFF_DUTY"), (rec.VEHICLES, "OUT_OF_SERVICE")):
        for doc in store.query(Query(collection).where("status", "==", "AVAILABLE")):
            if f"-{suffix}-" in doc.id:
                store.update(doc.path, {"status": status})
