"""The telemetry ingest while the broker's write lock is held elsewhere (issue #24 item 2), over a
fake publisher whose lock the test holds and frees, through the command service's own route: the
event loop keeps serving while a batch waits on the ingest thread, batches are published in the
order they came, and batches are shed past the bounds (and only then), nothing of them published.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.concurrency.group_commit import WouldWait
from meridian.concurrency.offload import SHED_RETRY_AFTER_S, AtOnce
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.ports import IdentityVerifier, Message
from services.command.app import create_app
from services.command.handlers import Deps
from tests.fakes import FakeDocumentStore, FakePublisher

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
CODEC = EventCodec(load_catalog())
GATEWAY = {"Authorization": "Bearer gateway:gw-fleet"}


class TokenVerifier(IdentityVerifier):
    def verify(self, token: str) -> Actor:
        role, _, subject = token.partition(":")
        if role != "gateway" or not subject:
            raise Unauthenticated("bad token")
        return Actor(subject=subject, role="gateway")


class LockedPublisher(FakePublisher):
    """A broker whose write lock another process may hold (``hold``/``free``): tried at once
    (within ``try_at_once``, as ``meridian.adapters.offload`` wires the embedded broker) a
    publish raises ``WouldWait``; otherwise it blocks its thread until freed. Records the thread
    of each publish and how many were tried at once."""

    def __init__(self) -> None:
        super().__init__()
        self.unlocked = threading.Event()
        self.unlocked.set()
        self.ran_on: list[int] = []
        self.tried_at_once = 0
        self._at_once = threading.local()

    def hold(self) -> None:
        self.unlocked.clear()

    def free(self) -> None:
        self.unlocked.set()

    def try_at_once(self, function: Callable[..., Any], *args: Any) -> Any:
        self._at_once.on = True
        try:
            return function(*args)
        finally:
            self._at_once.on = False

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        if getattr(self._at_once, "on", False):
            self.tried_at_once += 1
            if not self.unlocked.is_set():
                raise WouldWait("another process holds the broker's write lock")
        else:
            assert self.unlocked.wait(10), "the lock was never freed"
        self.ran_on.append(threading.get_ident())
        return super().publish(topic, messages)

    def vehicles(self) -> list[str]:
        return [CODEC.from_message(m.data, m.attributes).vehicle_id for _, m in self.published]


def batch(*vehicles: str) -> dict[str, Any]:
    at = (NOW - timedelta(seconds=5)).isoformat()
    position = {"lat": 12.9, "lng": 77.6}
    return {"pings": [{"vehicle_id": v, "position": position, "recorded_at": at} for v in vehicles]}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def thread() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="telemetry")
    yield executor
    executor.shutdown(wait=True)


def ingest(
    publisher: LockedPublisher, thread: ThreadPoolExecutor, **bounds: Any
) -> tuple[AtOnce, httpx.AsyncClient]:
    at_once = AtOnce(publisher.try_at_once, thread, **bounds)
    deps = Deps(
        store=FakeDocumentStore(clock=lambda: NOW),
        publisher=publisher,
        codec=CODEC,
        clock=lambda: NOW,
    )
    app = create_app(deps, TokenVerifier(), ingest=at_once)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://command")
    return at_once, client


@pytest.fixture
async def publisher() -> AsyncIterator[LockedPublisher]:
    publisher = LockedPublisher()
    yield publisher
    publisher.free()  # a test that failed midway leaves no thread waiting


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


def post(client: httpx.AsyncClient, *vehicles: str) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(client.post("/v1/telemetry", json=batch(*vehicles), headers=GATEWAY))


async def test_a_batch_that_would_wait_for_the_lock_waits_on_the_thread_while_the_loop_serves(
    publisher: LockedPublisher, thread: ThreadPoolExecutor
) -> None:
    at_once, client = ingest(publisher, thread)
    publisher.hold()
    sent = post(client, "veh-1", "veh-2")
    await until(lambda: at_once.waiting == 1)
    # Other requests of the process are served, many times, meanwhile.
    for _ in range(50):
        assert (await client.get("/healthz")).status_code == 200
    assert not sent.done() and publisher.published == []
    publisher.free()
    answer = await asyncio.wait_for(sent, 5)
    assert answer.status_code == 202 and answer.json() == {"accepted": 2, "rejected": []}
    assert publisher.vehicles() == ["veh-1", "veh-2"]  # published once
    assert publisher.ran_on == [publisher.ran_on[0]] != [threading.get_ident()]
    await until(lambda: at_once.waiting == 0)
    # Once the thread has caught up, batches are published on the loop again.
    assert (await client.post("/v1/telemetry", json=batch("veh-3"), headers=GATEWAY)).is_success
    assert publisher.ran_on[-1] == threading.get_ident()
    await client.aclose()


async def test_batches_that_come_while_the_thread_has_work_queue_behind_it_in_order(
    publisher: LockedPublisher, thread: ThreadPoolExecutor
) -> None:
    at_once, client = ingest(publisher, thread)
    publisher.hold()
    first = post(client, "veh-1")
    await until(lambda: at_once.waiting == 1)
    # Later batches are not tried on the loop, even should the lock be free for a moment: only
    # once the thread has caught up.
    later = [post(client, f"veh-{i}") for i in range(2, 6)]
    await until(lambda: at_once.waiting == 5)
    assert publisher.tried_at_once == 1
    publisher.free()
    answers = await asyncio.wait_for(asyncio.gather(first, *later), 5)
    assert [a.status_code for a in answers] == [202] * 5
    assert publisher.vehicles() == [f"veh-{i}" for i in range(1, 6)]
    assert publisher.tried_at_once == 1
    assert len(set(publisher.ran_on)) == 1 and publisher.ran_on[0] != threading.get_ident()
    await client.aclose()


def shed_total() -> float:
    return REGISTRY.get_sample_value("meridian_publish_shed_total") or 0.0


async def test_a_batch_is_shed_once_the_oldest_waiting_has_waited_past_the_bound_and_not_after(
    publisher: LockedPublisher, thread: ThreadPoolExecutor
) -> None:
    clock = Clock()
    at_once, client = ingest(publisher, thread, max_wait_s=1.0, clock=clock)
    shed_before = shed_total()
    publisher.hold()
    first = post(client, "veh-1")
    await until(lambda: at_once.waiting == 1)
    clock.now += 0.9  # under the bound: queued behind it
    second = post(client, "veh-2")
    await until(lambda: at_once.waiting == 2)
    clock.now += 0.2  # the oldest has waited 1.1 s
    shed = await client.post("/v1/telemetry", json=batch("veh-3"), headers=GATEWAY)
    assert shed.status_code == 503
    assert shed.headers["content-type"] == "application/problem+json"
    assert shed.headers["retry-after"] == str(SHED_RETRY_AFTER_S)
    assert shed.json()["type"].endswith("/overloaded")
    assert "wait to publish" in shed.json()["detail"]
    assert shed_total() == shed_before + 1
    assert at_once.waiting == 2  # the shed batch was never queued
    publisher.free()
    answers = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [a.status_code for a in answers] == [202, 202]
    # Nothing of the shed batch was published; the accepted ones were, once each.
    assert publisher.vehicles() == ["veh-1", "veh-2"]
    await until(lambda: at_once.waiting == 0)
    # Caught up: the same batch is accepted again, on the loop.
    retried = await client.post("/v1/telemetry", json=batch("veh-3"), headers=GATEWAY)
    assert retried.status_code == 202
    assert publisher.vehicles() == ["veh-1", "veh-2", "veh-3"]
    assert shed_total() == shed_before + 1
    await client.aclose()


async def test_a_batch_is_shed_while_too_many_wait_and_not_once_fewer_do(
    publisher: LockedPublisher, thread: ThreadPoolExecutor
) -> None:
    at_once, client = ingest(publisher, thread, max_waiting=3)
    publisher.hold()
    waiting = [post(client, f"veh-{i}") for i in range(3)]
    await until(lambda: at_once.waiting == 3)
    shed = await client.post("/v1/telemetry", json=batch("veh-9"), headers=GATEWAY)
    assert shed.status_code == 503 and "3 requests wait" in shed.json()["detail"]
    publisher.free()
    assert [a.status_code for a in await asyncio.gather(*waiting)] == [202] * 3
    await until(lambda: at_once.waiting == 0)
    assert (await client.post("/v1/telemetry", json=batch("veh-9"), headers=GATEWAY)).is_success
    assert publisher.vehicles() == ["veh-0", "veh-1", "veh-2", "veh-9"]
    await client.aclose()


async def test_a_caller_that_goes_away_still_has_its_batch_published_in_its_turn(
    publisher: LockedPublisher, thread: ThreadPoolExecutor
) -> None:
    at_once, client = ingest(publisher, thread)
    publisher.hold()
    gone = post(client, "veh-1")
    await until(lambda: at_once.waiting == 1)
    gone.cancel()
    kept = post(client, "veh-2")
    await until(lambda: at_once.waiting == 2)
    publisher.free()
    assert (await asyncio.wait_for(kept, 5)).status_code == 202
    await until(lambda: at_once.waiting == 0)
    assert publisher.vehicles() == ["veh-1", "veh-2"]
    await client.aclose()
