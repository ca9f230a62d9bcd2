"""The saga's steps over the embedded document store (which enforces Firestore's transaction
rules): each step's effect, its idempotency, re-offers, compensation and the events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian.app import dispatch_records as rec
from meridian.app.records import parcel_document, vehicle_assignment_path
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.actors import Actor
from meridian.domain.errors import Conflict, NotFound, Unavailable, ValidationError
from meridian.domain.model import DispatchWindow, GeoPoint, Parcel, Recipient, Stop, TimeWindow
from meridian.edge.push_auth import VerifiedPush
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.oidc import PushTokenVerifier, TokenIssuer, load_jwks
from meridian.embedded.routing import FaultInjectingOptimizer, OrToolsRouteOptimizer
from services.dispatch import steps
from services.dispatch.app import create_app
from services.dispatch.handlers import Deps
from tests.fakes import FakePublisher

NOW = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
DEPOT = GeoPoint(lat=12.97, lng=77.59)
CODEC = EventCodec(load_catalog())


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[Deps]:
    store = EmbeddedDocumentStore(tmp_path)
    optimizer = FaultInjectingOptimizer(OrToolsRouteOptimizer(), tmp_path / "faults")
    yield Deps(store, FakePublisher(), CODEC, optimizer, lambda: NOW)


def _seed(deps: Deps, parcels: int, drivers: int, vehicles: int = 1, late: int = 0) -> None:
    writes: list[tuple[str, str, Any]] = []
    for i in range(drivers):
        writes.append(
            (
                "set",
                f"drivers/d{i}",
                {
                    "driver_id": f"d{i}",
                    "name": "D",
                    "phone": "+919800000001",
                    "status": "AVAILABLE",
                },
            )
        )
    for i in range(vehicles):
        writes.append(
            (
                "set",
                f"vehicles/v{i}",
                {
                    "vehicle_id": f"v{i}",
                    "capacity_kg": 100.0,
                    "capacity_parcels": 10,
                    "depot": DEPOT.model_dump(),
                    "status": "AVAILABLE",
                },
            )
        )
    for i in range(parcels + late):
        # the `late` ones are promised before the window opens: the optimizer cannot serve them
        start = NOW - timedelta(hours=5) if i >= parcels else NOW + timedelta(hours=1)
        window = TimeWindow(
            start=start, end=start + timedelta(hours=3 if i < parcels else 4, minutes=-1)
        )
        parcel = Parcel(
            parcel_id=f"p{i}",
            shipment_id="s",
            client_id="c",
            recipient=Recipient(name="A", phone="+919812345678"),
            stop=Stop(
                location=GeoPoint(lat=12.97 + i / 500, lng=77.59), address="x", window=window
            ),
            weight_kg=1.0,
        )
        writes.append(
            ("set", f"parcels/p{i}", parcel_document(parcel, NOW, "seed", Actor("t", "dispatcher")))
        )
    dispatch_window = DispatchWindow(
        window_id="w1",
        depot=DEPOT,
        window=TimeWindow(start=NOW - timedelta(hours=2), end=NOW + timedelta(hours=8)),
        opened_by="dsp",
        execution_id="dispatch-w1",
    )
    writes.append(("set", rec.window_path("w1"), rec.window_document(dispatch_window, NOW)))
    deps.store.batch_write(writes)


def _step(deps: Deps, name: str, key: str | None = None, **body: Any) -> dict[str, Any]:
    return steps.run_step(name, key, steps.parse(name, body), deps)


def _status(deps: Deps, path: str) -> str:
    doc = deps.store.get(path)
    assert doc is not None
    return str(doc.data["status"])


def _events(deps: Deps) -> list[str]:
    assert isinstance(deps.publisher, FakePublisher)
    return [m.attributes["eventType"] for _, m in deps.publisher.published]


def test_reserve_optimize_assign_offer_confirm_complete(deps: Deps) -> None:
    _seed(deps, parcels=4, drivers=2, late=1)
    assert _step(deps, "reserve", window_id="w1") == {
        "window_id": "w1",
        "parcels": 5,
        "drivers": 2,
        "vehicles": 1,
    }
    plan = _step(deps, "optimize", window_id="w1", time_limit_s=0.2)
    assert (plan["routes"], plan["served"], plan["unserved"]) == (1, 4, 1)
    assigned = _step(deps, "assign", window_id="w1")
    assert assigned["routes"] == [{"route_id": "w1-r01", "driver_id": "d0", "vehicle_id": "v0"}]
    assert _status(deps, "parcels/p4") == "CREATED"  # unservable: back for the next window
    assert _status(deps, "drivers/d1") == "AVAILABLE"  # not needed by any route
    offered = _step(
        deps, "offer", window_id="w1", route_id="w1-r01", offer_number=1, callback_url="http://cb/1"
    )
    assert offered["driver_id"] == "d0"
    _step(deps, "confirm", assignment_id=offered["assignment_id"])
    assert {_status(deps, f"parcels/p{i}") for i in range(4)} == {"ASSIGNED"}
    route = deps.store.get("routes/w1-r01")
    assert route is not None
    for stop in route.data["stops"]:  # each parcel knows its place on the route, for the ETAs
        parcel = deps.store.get(f"parcels/{stop['parcel_id']}")
        assert parcel is not None and parcel.data["stop_sequence"] == stop["sequence"]
    assert (_status(deps, "drivers/d0"), _status(deps, "vehicles/v0")) == ("ON_ROUTE", "ON_ROUTE")
    # The confirmed route puts d0 on v0 where telemetry looks: the vehicle's assignment.
    assignment = deps.store.get(vehicle_assignment_path("v0"))
    assert assignment is not None
    assert (assignment.data["driver_id"], assignment.data["since"]) == ("d0", NOW)
    assert assignment.data["assigned_by"]["name"] == "ConfirmAssignment"
    done = _step(deps, "complete", window_id="w1", execution_id="dispatch-w1")
    assert done == {
        "window_id": "w1",
        "status": "DISPATCHED",
        "routes_confirmed": ["w1-r01"],
        "parcels_requeued": 1,
    }
    assert _events(deps) == [
        "DriverAssignmentOffered",
        "DriverAssignmentAccepted",
        "DispatchCompleted",
    ]


def test_a_retried_step_replays_its_first_answer_and_changes_nothing(deps: Deps) -> None:
    _seed(deps, parcels=2, drivers=1)
    _step(deps, "reserve", "x:reserve", window_id="w1")
    first = _step(deps, "optimize", "x:optimize", window_id="w1", time_limit_s=0.2)
    assert _step(deps, "optimize", "x:optimize", window_id="w1", time_limit_s=0.2) == first
    _step(deps, "assign", "x:assign", window_id="w1")
    assert _step(deps, "assign", "x:assign", window_id="w1")["routes"][0]["route_id"] == "w1-r01"
    offer = {
        "window_id": "w1",
        "route_id": "w1-r01",
        "offer_number": 1,
        "callback_url": "http://cb/1",
    }
    assert _step(deps, "offer", "x:offer", **offer) == _step(deps, "offer", "x:offer", **offer)
    # without the ledger too: the step finds its own work done and answers the same
    assert _step(deps, "offer", None, **offer)["assignment_id"] == "w1-r01-o1"
    with pytest.raises(Conflict):
        _step(deps, "offer", "x:offer", **{**offer, "callback_url": "http://cb/other"})


def test_offer_routes_offers_every_route_to_its_proposed_driver_in_one_call(deps: Deps) -> None:
    _seed(deps, parcels=14, drivers=2, vehicles=2)
    _step(deps, "reserve", window_id="w1")
    _step(deps, "optimize", window_id="w1", time_limit_s=0.2)
    assigned = _step(deps, "assign", window_id="w1")
    routes = assigned["routes"]
    assert len(routes) == 2  # ten parcels a van at most
    assert assigned["route_ids"] == [r["route_id"] for r in routes]
    offers = [
        {"route_id": r["route_id"], "callback_url": f"http://cb/{i}"} for i, r in enumerate(routes)
    ]

    answer = _step(deps, "offer_routes", "x:offers", window_id="w1", offers=offers, timeout_s=60)

    assert [(a["route_id"], a["driver_id"]) for a in answer["offers"]] == [
        (r["route_id"], r["driver_id"]) for r in routes
    ]
    assert [a["assignment_id"] for a in answer["offers"]] == [f"{r['route_id']}-o1" for r in routes]
    assert answer["offers"][0]["expires_at"] == (NOW + timedelta(seconds=60)).isoformat()
    for i, route in enumerate(routes):
        stored = deps.store.get(f"assignments/{route['route_id']}-o1")
        assert stored is not None
        assert (stored.data["status"], stored.data["callback_url"]) == ("OFFERED", f"http://cb/{i}")
        assert _status(deps, f"routes/{route['route_id']}") == "OFFERED"
    assert _events(deps) == ["DriverAssignmentOffered"] * len(routes)
    # a retry replays the answer; without the ledger the step finds its offers made
    again = {"window_id": "w1", "offers": offers, "timeout_s": 60}
    assert _step(deps, "offer_routes", "x:offers", **again) == answer
    assert (
        _step(deps, "offer_routes", None, window_id="w1", offers=offers)["offers"]
        == (answer["offers"])
    )
    # each offer is then answered like one made by `offer`
    _step(deps, "confirm", assignment_id=answer["offers"][0]["assignment_id"])
    assert _status(deps, f"routes/{routes[0]['route_id']}") == "CONFIRMED"


def test_offer_routes_refuses_a_malformed_list_and_a_route_of_another_window(deps: Deps) -> None:
    _seed(deps, parcels=2, drivers=1)
    with pytest.raises(ValidationError):
        _step(deps, "offer_routes", window_id="w1", offers=[{"route_id": "w1-r01"}])
    with pytest.raises(NotFound):
        _step(
            deps,
            "offer_routes",
            window_id="w1",
            offers=[{"route_id": "w9-r01", "callback_url": "http://cb"}],
        )


def test_decline_then_reoffer_to_another_driver_then_nobody_left(deps: Deps) -> None:
    _seed(deps, parcels=2, drivers=2)
    for name in ("reserve", "assign"):
        if name == "assign":
            _step(deps, "optimize", window_id="w1", time_limit_s=0.2)
        _step(deps, name, window_id="w1")
    base = {"window_id": "w1", "route_id": "w1-r01", "callback_url": "http://cb"}
    first = _step(deps, "offer", offer_number=1, **base)
    _step(deps, "decline", assignment_id=first["assignment_id"], reason="van too small")
    assert _status(deps, f"drivers/{first['driver_id']}") == "AVAILABLE"
    second = _step(deps, "offer", offer_number=2, **base)
    assert second["driver_id"] not in (None, first["driver_id"])
    _step(deps, "decline", assignment_id=second["assignment_id"], expired=True)
    assert _status(deps, f"assignments/{second['assignment_id']}") == "EXPIRED"
    # both drivers have turned this route down: nobody is left to offer it to
    assert _step(deps, "offer", offer_number=3, **base)["assignment_id"] is None
    with pytest.raises(Conflict):
        _step(deps, "confirm", assignment_id=first["assignment_id"])
    _step(deps, "release", window_id="w1", route_id="w1-r01")
    assert _step(deps, "requeue", window_id="w1", route_id="w1-r01")["requeued"] == 2
    assert _status(deps, "routes/w1-r01") == "RELEASED"
    assert (_status(deps, "parcels/p0"), _status(deps, "vehicles/v0")) == ("CREATED", "AVAILABLE")


def test_optimizer_down_then_full_compensation_and_failure_event(
    deps: Deps, tmp_path: Path
) -> None:
    _seed(deps, parcels=3, drivers=1)
    _step(deps, "reserve", window_id="w1")
    (tmp_path / "faults").mkdir()
    (tmp_path / "faults" / "down").touch()
    with pytest.raises(Unavailable):  # the service answers 503, which the workflow retries
        _step(deps, "optimize", "x:optimize", window_id="w1")
    _step(deps, "release", window_id="w1")
    assert _step(deps, "requeue", window_id="w1")["requeued"] == 3
    failed = _step(
        deps, "fail", window_id="w1", execution_id="dispatch-w1", reason="optimizer down"
    )
    assert failed == {"window_id": "w1", "status": "FAILED", "parcels_requeued": 3}
    assert (_status(deps, "drivers/d0"), _status(deps, "parcels/p1")) == ("AVAILABLE", "CREATED")
    assert _events(deps) == ["DispatchFailed"]
    # the first recorded outcome stands
    assert _step(deps, "complete", window_id="w1", execution_id="dispatch-w1")["status"] == "FAILED"


WORKFLOW = Settings(project="meridian-local").workflow_identity
STEPS_URL = "http://127.0.0.1:8799"


def _steps_client(deps: Deps, tmp_path: Path) -> tuple[TestClient, TokenIssuer]:
    """The step service as bootstrap builds it on the embedded backend: only the workflow's
    identity may call, with a token for the step's URL."""
    auth = VerifiedPush(PushTokenVerifier(load_jwks(tmp_path)), frozenset({WORKFLOW}))
    client = TestClient(create_app(deps, auth, STEPS_URL), raise_server_exceptions=False)
    return client, TokenIssuer(tmp_path)


def _as_workflow(issuer: TokenIssuer, step: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(f'{STEPS_URL}/v1/steps/{step}', WORKFLOW)}"}


def test_the_route_refuses_a_bad_body_naming_each_field_before_any_step_runs(
    deps: Deps, tmp_path: Path
) -> None:
    _seed(deps, parcels=1, drivers=1)
    client, issuer = _steps_client(deps, tmp_path)
    bad = client.post(
        "/v1/steps/offer_routes",
        json={"offers": [{"route_id": "w1-r01"}], "timeout_s": -1},
        headers=_as_workflow(issuer, "offer_routes"),
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert {e["location"] for e in bad.json()["errors"]} == {
        "window_id",
        "offers.0.callback_url",
        "timeout_s",
    }
    assert (
        client.post("/v1/steps/nope", json={}, headers=_as_workflow(issuer, "nope")).status_code
        == 404
    )
    assert _status(deps, "parcels/p0") == "CREATED"  # nothing ran
    reserve = {**_as_workflow(issuer, "reserve"), "Idempotency-Key": "k"}
    first = client.post("/v1/steps/reserve", json={"window_id": "w1"}, headers=reserve)
    again = client.post("/v1/steps/reserve", json={"window_id": "w1"}, headers=reserve)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    reused = client.post(
        "/v1/steps/assign",
        json={"window_id": "w1"},
        headers={**_as_workflow(issuer, "assign"), "Idempotency-Key": "k"},
    )
    assert reused.status_code == 422  # the one request ledger: a key names one request


def test_only_the_dispatch_workflow_may_call_a_step_and_before_its_body_is_judged(
    deps: Deps, tmp_path: Path
) -> None:
    """#25 item 7: POST /v1/steps/release with no token answered 422, describing the body it
    wanted to an anonymous caller. Authentication first (401), authorisation (403), validation."""
    _seed(deps, parcels=1, drivers=1)
    client, issuer = _steps_client(deps, tmp_path)
    anonymous = client.post("/v1/steps/release")
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    assert client.post("/v1/steps/release", content=b"{not json").status_code == 401
    assert client.post("/v1/steps/no-such-step").status_code == 401
    forged = TokenIssuer(tmp_path / "elsewhere").token(f"{STEPS_URL}/v1/steps/release", WORKFLOW)
    headers = {"Authorization": f"Bearer {forged}"}
    assert client.post("/v1/steps/release", headers=headers).status_code == 401
    other_step = _as_workflow(issuer, "complete")  # a token for another step's URL
    assert client.post("/v1/steps/release", headers=other_step).status_code == 401
    intruder = issuer.token(f"{STEPS_URL}/v1/steps/release", "intruder@x.iam.gserviceaccount.com")
    headers = {"Authorization": f"Bearer {intruder}"}
    assert client.post("/v1/steps/release", json={}, headers=headers).status_code == 403
    invalid = client.post("/v1/steps/release", json={}, headers=_as_workflow(issuer, "release"))
    assert invalid.status_code == 422  # only now is the body judged
    assert _status(deps, "parcels/p0") == "CREATED"  # nothing ran
