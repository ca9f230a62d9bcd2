"""The ETA reactor's write discipline and its SLA timer, on fakes."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.embedded.oidc import TokenIssuer
from meridian.ports import DocumentStore, Query
from services.reactors.eta import app as eta_app
from services.reactors.eta import handlers as eta
from services.reactors.eta.schedule import SLA_TICK_PATH
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.fakes_reactors import FakeTravelTime
from tests.unit.test_reactors import T0, delivered, out


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _deps(clock: Clock) -> tuple[eta.Deps, FakePublisher]:
    publisher = FakePublisher()
    store = FakeDocumentStore()
    codec = EventCodec(load_catalog())
    return eta.Deps(store, publisher, codec, FakeTravelTime(), clock), publisher


def _types(publisher: FakePublisher) -> list[str]:
    return [m.attributes["eventType"] for _, m in publisher.published]


def _status_writes(store: DocumentStore) -> dict[str, datetime]:
    """When each parcel's status view was last written."""
    return {d.id: d.data["updated_at"] for d in store.query(Query("parcel_status"))}


def test_a_movement_rewrites_only_the_status_views_whose_eta_or_sla_changed() -> None:
    clock = Clock(T0)
    deps, publisher = _deps(clock)
    # p-1 at the vehicle's position; p-2 and p-3 beyond it, 10 minutes per leg.
    eta.project(out("p-1", lat=12.97), deps)
    eta.project(out("p-2", lat=13.00), deps)
    eta.project(out("p-3", lat=13.10), deps)
    assert set(_status_writes(deps.store)) == {"p-1", "p-2", "p-3"}
    clock.now = T0 + timedelta(minutes=1)
    # Delivered where the vehicle already was, at the time it was already expected there: the
    # remaining stops' ETAs do not move, so only p-1's view (now delivered, SLA met) is rewritten.
    eta.project(delivered("p-1", at=T0), deps)
    written = _status_writes(deps.store)
    assert written["p-1"] == clock.now
    assert written["p-2"] == T0 and written["p-3"] == T0
    p1 = deps.store.get("parcel_status/p-1")
    assert p1 is not None and p1.data["sla"] == "met" and p1.data["eta"] is None
    assert _types(publisher).count("RouteEtaUpdated") == 3  # one per new stop, none on schedule
    # Delivered 30 minutes late: every remaining ETA moves by 30 minutes, so they are rewritten.
    clock.now = T0 + timedelta(minutes=2)
    eta.project(delivered("p-2", at=T0 + timedelta(minutes=40)), deps)
    written = _status_writes(deps.store)
    assert written["p-3"] == clock.now
    p3 = deps.store.get("parcel_status/p-3")
    assert p3 is not None and p3.data["eta"] == T0 + timedelta(minutes=50)
    assert _types(publisher).count("RouteEtaUpdated") == 4


def test_the_tick_announces_a_closed_window_once_with_no_route_event() -> None:
    clock = Clock(T0)
    deps, publisher = _deps(clock)
    eta.project(out("p-1", lat=12.97, end=T0 + timedelta(minutes=30)), deps)
    eta.project(out("p-2", lat=13.00, end=T0 + timedelta(hours=2)), deps)
    board = deps.store.get("route_board/r-1")
    assert board is not None and board.data["next_due"] == T0 + timedelta(minutes=30)
    assert eta.tick(deps) == 0  # nothing due yet
    clock.now = T0 + timedelta(minutes=31)
    assert eta.tick(deps) == 1
    assert eta.tick(deps) == 0  # idempotent: the stop is marked breached on the board
    assert _types(publisher).count("SlaBreached") == 1
    status = deps.store.get("parcel_status/p-1")
    assert status is not None and status.data["sla"] == "breached"
    board = deps.store.get("route_board/r-1")
    assert board is not None and board.data["next_due"] == T0 + timedelta(hours=2)
    assert not deps.store.query(Query(eta.OUTBOX))  # published and cleared
    # A route event after the tick does not announce the same breach again...
    eta.project(delivered("p-2", at=T0 + timedelta(minutes=35)), deps)
    assert _types(publisher).count("SlaBreached") == 1
    # ...and once nothing is pending, the board leaves the due-time index.
    board = deps.store.get("route_board/r-1")
    assert board is not None and "next_due" not in board.data


def test_tick_and_route_event_derive_the_same_breach_id() -> None:
    clock = Clock(T0)
    by_event, event_publisher = _deps(clock)
    by_tick, tick_publisher = _deps(clock)
    late = T0 + timedelta(minutes=20)
    for deps in (by_event, by_tick):
        eta.project(out("p-1", lat=12.97, end=T0 + timedelta(minutes=10)), deps)
        eta.project(out("p-2", lat=13.00, end=T0 + timedelta(hours=2)), deps)
    eta.project(delivered("p-2", at=late), by_event)  # movement after p-1's window closed
    clock.now = late
    eta.tick(by_tick)

    def breach_ids(publisher: FakePublisher) -> list[str]:
        return [
            m.attributes["eventId"]
            for _, m in publisher.published
            if m.attributes["eventType"] == "SlaBreached"
        ]

    assert breach_ids(event_publisher) == breach_ids(tick_publisher)
    assert len(breach_ids(tick_publisher)) == 1


def test_only_the_scheduler_identity_may_call_the_tick(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)  # the data directory's key, which the service trusts
    settings = Settings(data_dir=tmp_path, base_port=9950)
    client = TestClient(eta_app.create_app(settings))
    audience = f"{settings.url_of('eta')}{SLA_TICK_PATH}"
    assert client.post(SLA_TICK_PATH).status_code == 401
    pusher = issuer.token(audience, settings.push_identity)
    refused = client.post(SLA_TICK_PATH, headers={"Authorization": f"Bearer {pusher}"})
    assert refused.status_code == 403
    scheduler = issuer.token(audience, settings.scheduler_identity)
    answer = client.post(SLA_TICK_PATH, headers={"Authorization": f"Bearer {scheduler}"})
    assert answer.status_code == 200 and answer.json() == {"breaches_announced": 0}


def test_a_delivery_reported_late_does_not_move_the_vehicle_back_to_where_it_was() -> None:
    deps, _ = _deps(Clock(T0))
    eta.project(out("p-1", lat=12.97), deps)
    eta.project(out("p-2", lat=13.00), deps)
    eta.project(out("p-3", lat=13.00), deps)  # next door to p-2: no travel from there
    at_p2 = delivered("p-2", at=T0 + timedelta(minutes=20)).model_copy(update={"lat": 13.00})
    eta.project(at_p2, deps)
    # p-1's delivery, ten minutes earlier, reaches the reactor only now: the vehicle is still at
    # p-2, so p-3 is still due at once, not a leg later.
    eta.project(delivered("p-1", at=T0 + timedelta(minutes=10)), deps)
    p3 = deps.store.get("parcel_status/p-3")
    assert p3 is not None and p3.data["eta"] == T0 + timedelta(minutes=20)


def test_stops_follow_the_planned_sequence_whatever_order_they_went_out_in() -> None:
    deps, _ = _deps(Clock(T0))
    # The van is loaded last stop first: the events arrive in reverse, the plan says otherwise.
    for parcel, sequence, lat in (("p-3", 2, 13.00), ("p-2", 1, 13.00), ("p-1", 0, 12.97)):
        eta.project(out(parcel, lat=lat).model_copy(update={"stop_sequence": sequence}), deps)
    views = {d.id: d.data for d in deps.store.query(Query("parcel_status"))}
    etas = {parcel: view["eta"] for parcel, view in views.items()}
    # No movement yet: the route starts at its first planned stop, p-1; p-2 is a leg on, and p-3
    # (next door to p-2) right after it.
    assert etas == {
        "p-1": T0,
        "p-2": T0 + timedelta(minutes=10),
        "p-3": T0 + timedelta(minutes=10),
    }


def test_a_stop_the_vehicle_is_past_keeps_its_estimate_until_its_own_delivery_arrives() -> None:
    deps, _ = _deps(Clock(T0))
    for sequence, lat in enumerate((12.97, 13.00, 13.10, 13.20)):
        eta.project(
            out(f"p-{sequence + 1}", lat=lat).model_copy(update={"stop_sequence": sequence}), deps
        )
    # p-3's delivery overtakes those of p-1 and p-2 on its way to the reactor.
    at_p3 = delivered("p-3", at=T0 + timedelta(minutes=20)).model_copy(update={"lat": 13.10})
    eta.project(at_p3, deps)
    views = {d.id: d.data for d in deps.store.query(Query("parcel_status"))}
    assert views["p-4"]["eta"] == T0 + timedelta(minutes=30)  # a leg on from p-3
    assert views["p-2"]["eta"] == T0 + timedelta(minutes=10)  # not "drive back to it" (T0+30)
