"""The dispatch saga over real processes: `meridian up` runs the platform (with the Workflows
engine), the command service and the dispatch step service; drivers answer offers through the
command service; the workflow is workflows/dispatch.yaml, unchanged.

Each test seeds its own drivers, vehicles and parcels (parcels promised on a day no other test
uses), and takes whatever it leaves available out of service afterwards, so the tests share one
runtime without sharing a pool."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from meridian.app.records import parcel_document
from meridian.catalog import load_catalog
from meridian.config import Settings
from meridian.domain.actors import Actor
from meridian.domain.model import GeoPoint, Parcel, Recipient, Stop, TimeWindow
from meridian.embedded.docstore.stores import all_stores
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.embedded.routing import fault_dir
from meridian.ports import Query
from meridian.runtime.platform import prepare_data_dir
from tests.e2e.conftest import ROOT, free_port_block

pytestmark = pytest.mark.e2e
DEPOT = {"lat": 12.97, "lng": 77.59}
BASE_DAY = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0) + timedelta(days=2)
FAST = {"solve_time_limit_s": 0.5, "offer_timeout_s": 30, "max_offers": 3}


class Stack:
    """The three processes the saga needs, started as `meridian up` would start them (same
    modules, ports and environment) but without the reactors this test does not use, so it stays
    quick on a small machine. ``kill``/``start`` stand in for the supervisor's restart."""

    SERVICES: ClassVar[dict[str, str]] = {
        "platform": "meridian.runtime.platform",
        "command": "services.command.app",
        "dispatch": "services.dispatch.app",
    }

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base_port = free_port_block(24)
        self.settings = Settings(data_dir=data_dir, base_port=self.base_port)
        self.env = {
            **os.environ,
            "MERIDIAN_DATA_DIR": str(data_dir),
            "MERIDIAN_BASE_PORT": str(self.base_port),
            "MERIDIAN_HOST": "127.0.0.1",
            "PYTHONPATH": str(ROOT),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        prepare_data_dir(load_catalog(), self.settings)
        (data_dir / "logs").mkdir(exist_ok=True)

    def url(self, service: str) -> str:
        return self.settings.url_of(service)

    def start(self, *services: str, timeout: float = 90.0) -> None:
        for name in services or tuple(self.SERVICES):
            with (self.data_dir / "logs" / f"{name}.log").open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", self.SERVICES[name]],
                    cwd=ROOT,
                    env={**self.env, "PORT": str(self.settings.port_of(name))},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        for name in services or tuple(self.SERVICES):
            wait_for(functools.partial(self._healthy, name), timeout)

    def _healthy(self, name: str) -> bool:
        assert self.processes[name].poll() is None, f"{name} exited; see {self.data_dir}/logs"
        try:
            return httpx.get(f"{self.url(name)}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("dispatch-saga"))
    Broker(stack.data_dir).create_subscription(
        SubscriptionConfig(name="e2e-dispatch-audit", topic="logistics.events")
    )
    stack.start()
    yield stack
    stack.stop()


class Desk:
    """One test's view of the runtime: its data, its tokens, and the waits it needs."""

    def __init__(self, runtime: Stack, day: int) -> None:
        self.runtime = runtime
        self.store = all_stores(runtime.data_dir)
        self.issuer = LocalIdentityIssuer(runtime.data_dir)
        self.suffix = os.urandom(3).hex()
        self.start = BASE_DAY + timedelta(days=day)
        self.window_id = f"w-{self.suffix}"
        self.http = httpx.Client(base_url=runtime.url("command"), timeout=10)
        self.parcels: list[str] = []

    def headers(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.token(subject, role)}"}

    def seed(self, parcels: int, vehicles: int, drivers: int, capacity: int = 10) -> None:
        now = datetime.now(UTC)
        writes: list[tuple[str, str, Any]] = []
        for i in range(drivers):
            driver = f"drv-{self.suffix}-{i}"
            writes.append(
                (
                    "set",
                    f"drivers/{driver}",
                    {
                        "driver_id": driver,
                        "name": f"Driver {i}",
                        "phone": "+919800000001",
                        "status": "AVAILABLE",
                    },
                )
            )
        for i in range(vehicles):
            vehicle = f"veh-{self.suffix}-{i}"
            writes.append(
                (
                    "set",
                    f"vehicles/{vehicle}",
                    {
                        "vehicle_id": vehicle,
                        "capacity_kg": 500.0,
                        "capacity_parcels": capacity,
                        "depot": DEPOT,
                        "status": "AVAILABLE",
                    },
                )
            )
        window = TimeWindow(start=self.start, end=self.start + timedelta(hours=8))
        for i in range(parcels):
            parcel = Parcel(
                parcel_id=f"p-{self.suffix}-{i}",
                shipment_id=f"s-{self.suffix}",
                client_id="c-e2e",
                recipient=Recipient(name="Asha", phone="+919812345678"),
                stop=Stop(
                    location=GeoPoint(lat=12.97 + 0.004 * i, lng=77.59 - 0.003 * i),
                    address=f"{i} MG Road",
                    window=window,
                ),
                weight_kg=2.0,
            )
            self.parcels.append(parcel.parcel_id)
            writes.append(
                (
                    "set",
                    f"parcels/{parcel.parcel_id}",
                    parcel_document(parcel, now, "seed", Actor("e2e", "dispatcher")),
                )
            )
        self.store.batch_write(writes)

    def open(self, **arguments: Any) -> httpx.Response:
        body = {
            "window_id": self.window_id,
            "depot": DEPOT,
            "window": {
                "start": self.start.isoformat(),
                "end": (self.start + timedelta(hours=10)).isoformat(),
            },
            **FAST,
            **arguments,
        }
        return self.http.post(
            "/v1/dispatch-windows", json=body, headers=self.headers("dispatcher", "dsp-1")
        )

    def window(self) -> dict[str, Any]:
        response = self.http.get(
            f"/v1/dispatch-windows/{self.window_id}", headers=self.headers("dispatcher", "dsp-1")
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def offers(self, status: str = "OFFERED") -> list[dict[str, Any]]:
        found = self.store.query(Query("assignments").where("window_id", "==", self.window_id))
        return sorted(
            (dict(d.data) for d in found if d.data["status"] == status),
            key=lambda a: a["assignment_id"],
        )

    def answer(self, offer: dict[str, Any], decision: str, until: float = 20.0) -> httpx.Response:
        url = f"/v1/assignments/{offer['assignment_id']}:{decision}"
        deadline = time.monotonic() + until
        while True:  # 503 while the platform (and its engine) restarts
            response = self.http.post(
                url, json={}, headers=self.headers("driver", offer["driver_id"])
            )
            if response.status_code != 503 or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    def settled(self, timeout: float = 40.0) -> dict[str, Any]:
        state: dict[str, Any] = {}

        def done() -> bool:
            state.update(self.window())
            return bool(
                state["status"] in ("DISPATCHED", "FAILED")
                and state["execution"]["state"] != "ACTIVE"
            )

        wait_for(done, timeout)
        return state

    def parcel_statuses(self) -> set[str]:
        return {self.store.get(f"parcels/{p}").data["status"] for p in self.parcels}  # type: ignore[union-attr]

    def retire_pool(self) -> None:
        """Take what this test left available out of service, so the next test's pool is its own."""
        for collection, status in (("drivers", "OFF_DUTY"), ("vehicles", "OUT_OF_SERVICE")):
            for doc in self.store.query(Query(collection).where("status", "==", "AVAILABLE")):
                self.store.update(doc.path, {"status": status})


def wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def events_for(runtime: Stack, subject: str, wanted: str, timeout: float = 10.0) -> list[str]:
    broker = Broker(runtime.data_dir)
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (wanted, subject) not in seen:
        batch = broker.pull("e2e-dispatch-audit", 500)
        broker.acknowledge("e2e-dispatch-audit", [m.ack_id for m in batch])
        seen += [
            (m.message.attributes["eventType"], m.message.attributes["subject"]) for m in batch
        ]
        if not batch:
            time.sleep(0.1)
    return [event for event, s in seen if s == subject]


@pytest.fixture
def desk_factory(runtime: Stack) -> Iterator[Callable[[int], Desk]]:
    desks: list[Desk] = []

    def make(day: int) -> Desk:
        desk = Desk(runtime, day)
        desks.append(desk)
        return desk

    yield make
    for desk in desks:
        desk.retire_pool()


def accept_all(desk: Desk, routes: int, timeout: float = 30.0) -> None:
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(answered) < routes:
        assert time.monotonic() < deadline, f"only {len(answered)} of {routes} offers seen"
        for offer in desk.offers():
            if offer["assignment_id"] not in answered:
                assert desk.answer(offer, "accept").status_code == 202
                answered.add(offer["assignment_id"])
        time.sleep(0.05)


def test_happy_path_every_route_confirmed(
    runtime: Stack, desk_factory: Callable[[int], Desk]
) -> None:
    desk = desk_factory(0)
    desk.seed(parcels=6, vehicles=2, drivers=2, capacity=4)  # 4 parcels a vehicle: two routes
    opened = desk.open()
    assert opened.status_code == 202, opened.text
    assert opened.json()["execution_id"] == f"dispatch-{desk.window_id}"
    accept_all(desk, routes=2)
    window = desk.settled()
    assert window["status"] == "DISPATCHED"
    assert window["execution"]["state"] == "SUCCEEDED"
    assert window["progress"]["routes_by_status"] == {"CONFIRMED": 2}
    assert desk.parcel_statuses() == {"ASSIGNED"}
    events = events_for(runtime, desk.window_id, "DispatchCompleted")
    assert events.count("DispatchCompleted") == 1 and "DispatchWindowOpened" in events


def test_a_declined_route_is_offered_to_another_driver(desk_factory: Callable[[int], Desk]) -> None:
    desk = desk_factory(1)
    desk.seed(parcels=3, vehicles=1, drivers=2)
    assert desk.open().status_code == 202
    first = wait_for(desk.offers, 20)[0]
    assert desk.answer(first, "decline").status_code == 202
    second = wait_for(lambda: [o for o in desk.offers() if o["offer_number"] == 2], 20)[0]
    assert second["driver_id"] != first["driver_id"]
    assert desk.answer(second, "accept").status_code == 202
    window = desk.settled()
    assert window["status"] == "DISPATCHED"
    assert window["routes"][0]["driver_id"] == second["driver_id"]
    assert [o["assignment_id"] for o in desk.offers("DECLINED")] == [first["assignment_id"]]
    assert desk.parcel_statuses() == {"ASSIGNED"}
    # a late change of mind is refused: the first offer is closed
    assert desk.answer(first, "accept").status_code == 409


def test_an_unanswered_offer_times_out_and_the_route_is_given_back(
    desk_factory: Callable[[int], Desk],
) -> None:
    desk = desk_factory(2)
    desk.seed(parcels=3, vehicles=1, drivers=1)
    assert desk.open(offer_timeout_s=1.0, max_offers=1).status_code == 202
    window = desk.settled()
    assert window["status"] == "DISPATCHED"  # the saga ends well: nothing half-reserved
    assert window["progress"]["routes_by_status"] == {"RELEASED": 1}
    assert window["parcels_requeued"] == 3
    assert desk.parcel_statuses() == {"CREATED"}
    assert len(desk.offers("EXPIRED")) == 1
    pool = [
        desk.store.get(f"{c}/{i}")
        for c, i in (("drivers", f"drv-{desk.suffix}-0"), ("vehicles", f"veh-{desk.suffix}-0"))
    ]
    assert [d.data["status"] for d in pool if d] == ["AVAILABLE", "AVAILABLE"]


def test_optimizer_down_is_retried_then_everything_compensated(
    runtime: Stack, desk_factory: Callable[[int], Desk]
) -> None:
    desk = desk_factory(3)
    desk.seed(parcels=3, vehicles=1, drivers=1)
    faults = fault_dir(runtime.data_dir)
    faults.mkdir(parents=True, exist_ok=True)
    (faults / "down").touch()
    try:
        assert desk.open().status_code == 202
        window = desk.settled(timeout=40)  # http.default_retry: 5 retries, about 8 s of backoff
    finally:
        (faults / "down").unlink()
    assert window["status"] == "FAILED"
    assert window["execution"]["state"] == "FAILED"
    assert (
        "503" in window["outcome"]["reason"] or "unavailable" in window["outcome"]["reason"].lower()
    )
    assert desk.parcel_statuses() == {"CREATED"}
    driver = desk.store.get(f"drivers/drv-{desk.suffix}-0")
    assert driver is not None and driver.data["status"] == "AVAILABLE"
    optimize_calls = [
        s
        for s in httpx.get(
            f"{runtime.url('platform')}/v1/executions/dispatch-{desk.window_id}/steps"
        ).json()["steps"]
        if s.get("step") == "post" and s.get("state") == "FAILED"
    ]
    assert optimize_calls, "the failed optimize call is in the step history"
    assert "DispatchFailed" in events_for(runtime, desk.window_id, "DispatchFailed")


def test_engine_killed_while_waiting_resumes_and_completes(
    runtime: Stack, desk_factory: Callable[[int], Desk]
) -> None:
    desk = desk_factory(4)
    desk.seed(parcels=3, vehicles=1, drivers=1)
    assert desk.open().status_code == 202
    offer = wait_for(desk.offers, 20)[0]
    runtime.kill("platform")  # SIGKILL: no shutdown, the execution stays ACTIVE in the store
    # the driver answers while the engine is down: the command service answers 503 until the
    # platform is back (the supervisor's restart, done here by hand) and has resumed the saga
    assert desk.answer(offer, "accept", until=0.5).status_code == 503
    runtime.start("platform")
    assert desk.answer(offer, "accept", until=20).status_code == 202
    window = desk.settled()
    assert window["status"] == "DISPATCHED"
    assert window["execution"]["state"] == "SUCCEEDED"
    assert desk.parcel_statuses() == {"ASSIGNED"}


def test_the_same_window_opened_twice_runs_once(
    runtime: Stack, desk_factory: Callable[[int], Desk]
) -> None:
    desk = desk_factory(5)
    desk.seed(parcels=3, vehicles=1, drivers=1)
    first, second = desk.open(), desk.open()
    assert first.status_code == second.status_code == 202
    assert first.json()["execution_id"] == second.json()["execution_id"]
    accept_all(desk, routes=1)
    assert desk.settled()["status"] == "DISPATCHED"
    assert desk.open().json()["execution_id"] == first.json()["execution_id"]  # after the end too
    executions = httpx.get(
        f"{runtime.url('platform')}/v1/executions", params={"workflow": "dispatch"}
    ).json()
    mine = [e for e in executions["executions"] if e["executionId"] == first.json()["execution_id"]]
    assert len(mine) == 1
    assert len(desk.offers("ACCEPTED")) == 1
    events = events_for(runtime, desk.window_id, "DispatchCompleted")
    assert events.count("DispatchCompleted") == 1
    assert "DispatchWindowOpened" in events  # republished with one event id; consumers dedupe
