"""Events pushed together are handled together: one batch, the same effects as one by one."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.concurrency.batches import Batcher
from meridian.concurrency.group_commit import Transactions, commit_per_event
from meridian.domain import events as ev
from meridian.domain.errors import Unavailable
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Query
from services.reactors.billing import handlers as billing
from services.reactors.eta import handlers as eta
from services.reactors.notification import handlers as notification
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.fakes_reactors import FakeBillingApi, FakeTravelTime
from tests.unit.test_reactors import T0, _notification, delivered, out

# The batcher -------------------------------------------------------------------------------------


def test_pushes_that_arrive_while_a_batch_runs_form_the_next_batch() -> None:
    batches: list[list[str]] = []
    release = threading.Event()

    def handle_batch(events: Any) -> list[str]:
        if not batches:
            release.wait(5)  # the first batch is slow: the others arrive meanwhile
        batches.append([e.event_id for e in events])
        return [f"done {e.event_id}" for e in events]

    async def scenario() -> list[Any]:
        batcher = Batcher(handle_batch, lambda e: pytest.fail("no fallback expected"))
        first = asyncio.create_task(batcher.submit(out("p-0")))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(out(f"p-{i}"))) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest)

    outcomes = asyncio.run(scenario())
    assert batches == [["evt-out-p-0"], ["evt-out-p-1", "evt-out-p-2", "evt-out-p-3"]]
    assert outcomes == [f"done evt-out-p-{i}" for i in range(4)]


def test_a_batch_that_fails_as_a_whole_is_handled_event_by_event() -> None:
    def handle_batch(events: Any) -> list[str]:
        raise RuntimeError("one of them is poison")

    def handle(event: ev.DomainEvent) -> str:
        if event.event_id == "evt-out-p-2":
            raise Unavailable("poison")
        return "ok"

    async def scenario() -> list[Any]:
        batcher = Batcher(handle_batch, handle)
        return await asyncio.gather(
            *(batcher.submit(out(f"p-{i}")) for i in range(4)), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    assert outcomes[:2] == ["ok", "ok"] and outcomes[3] == "ok"
    assert isinstance(outcomes[2], Unavailable)


# ETA ---------------------------------------------------------------------------------------------


def _eta() -> tuple[eta.Deps, FakePublisher]:
    publisher = FakePublisher()
    deps = eta.Deps(
        FakeDocumentStore(), publisher, EventCodec(load_catalog()), FakeTravelTime(), lambda: T0
    )
    return deps, publisher


def _route(deps: eta.Deps, stops: int) -> None:
    for i in range(stops):
        eta.project(out(f"p-{i}", lat=12.97 + i / 100, end=T0 + timedelta(hours=3)), deps)


def _deliveries(first: int, last: int) -> list[ev.ParcelDelivered]:
    return [
        delivered(f"p-{i}", at=T0 + timedelta(minutes=10 * (i + 1))) for i in range(first, last)
    ]


def _shown(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "updated_at"}


def _board(board: dict[str, Any]) -> dict[str, Any]:
    """The board as shown: a finished stop keeps whichever ETA it last had while pending, which
    intermediate states skipped by a batch do not change the meaning of."""
    stops = {
        parcel: {
            k: v
            for k, v in stop.items()
            if stop["status"] == "pending" or k not in ("eta", "announced_eta")
        }
        for parcel, stop in board["stops"].items()
    }
    return {**_shown(board), "stops": stops}


def test_a_batch_projects_the_route_as_one_by_one_would_with_one_board_write() -> None:
    one_by_one, _ = _eta()
    batched, publisher = _eta()
    for deps in (one_by_one, batched):
        _route(deps, 6)
    for event in _deliveries(0, 4):
        eta.project(event, one_by_one)
    writes_before = len(publisher.published)
    outcomes = eta.project_batch(_deliveries(0, 4), batched)

    assert all("in a batch of 4" in o for o in outcomes)
    for i in range(6):
        alone, together = (d.store.get(f"parcel_status/p-{i}") for d in (one_by_one, batched))
        assert alone is not None and together is not None
        assert _shown(alone.data) == _shown(together.data)
    alone, together = (d.store.get("route_board/r-1") for d in (one_by_one, batched))
    assert alone is not None and together is not None
    assert _board(alone.data) == _board(together.data)
    announced = [m.attributes["eventType"] for _, m in publisher.published[writes_before:]]
    assert announced.count("RouteEtaUpdated") <= 1  # the route's last state, once
    assert batched.store.query(Query("eta_outbox")) == []  # published and cleared


def test_a_batch_with_a_redelivered_event_projects_it_once_and_republishes_leftovers() -> None:
    deps, publisher = _eta()
    _route(deps, 3)
    eta.project(delivered("p-0"), deps)
    # A crash between a commit and its publication left an outbox entry behind.
    leftover = ev.RouteEtaUpdated(event_id="evt-left", occurred_at=T0, route_id="r-1", stops=())
    deps.store.set(
        "eta_outbox/evt-earlier",
        {"events": [{"type": "RouteEtaUpdated", "body": leftover.model_dump(mode="python")}]},
    )
    outcomes = eta.project_batch([delivered("p-0"), delivered("p-1"), delivered("p-1")], deps)

    assert outcomes[0].startswith("duplicate") and outcomes[2].startswith("duplicate")
    assert "events announced" in outcomes[1]
    assert "evt-left" in [m.attributes["eventId"] for _, m in publisher.published]
    assert deps.store.query(Query("eta_outbox")) == []
    ledger = deps.store.query(Query("processed_events"))
    assert sum(d.id.endswith("evt-del-p-1") for d in ledger) == 1


# Notification ------------------------------------------------------------------------------------


def _eta_update(n: int, minutes: int) -> ev.RouteEtaUpdated:
    stop = ev.StopEta(
        parcel_id="p-1", sequence=0, eta=T0 + timedelta(minutes=minutes), window_end=T0
    )
    return ev.RouteEtaUpdated(
        event_id=f"evt-eta-{n}", occurred_at=T0, route_id="r-1", stops=(stop,)
    )


def test_eta_updates_in_one_batch_tell_a_customer_as_one_after_the_other_would() -> None:
    deps, sms = _notification()
    notification.notify(out(), deps)
    notification.notify(_eta_update(1, 30), deps)  # the baseline
    # Both 20 minutes from the baseline, 5 from each other: one SMS, not two.
    outcomes = notification.notify_batch([_eta_update(2, 50), _eta_update(3, 55)], deps)
    assert outcomes == ["1 sms sent", "0 sms sent"]
    assert len([k for k in sms.sent if "evt-eta" in k]) == 1
    contact = deps.store.get("notification_contacts/p-1")
    assert contact is not None and contact.data["last_eta"] == T0 + timedelta(minutes=50)


def test_a_gateway_failure_fails_only_its_own_event_of_the_batch() -> None:
    deps, sms = _notification()
    calls = 0
    real_send = sms.send

    def flaky(to: str, body: str, key: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Unavailable("gateway hiccup")
        return real_send(to, body, key)

    sms.send = flaky  # type: ignore[method-assign]
    events = [delivered("p-1"), delivered("p-2"), delivered("p-3")]
    outcomes = notification.notify_batch(events, deps)
    assert outcomes[0] == "1 sms sent" and outcomes[2] == "1 sms sent"
    assert isinstance(outcomes[1], Unavailable)
    assert deps.store.get("processed_events/notification:evt-del-p-2") is None
    assert notification.notify(delivered("p-2"), deps) == "1 sms sent"  # the retry


def test_a_batch_sends_its_sms_side_by_side_so_a_slow_gateway_costs_one_wait() -> None:
    deps, sms = _notification()
    real_send = sms.send

    def slow(to: str, body: str, key: str) -> Any:
        time.sleep(0.3)
        return real_send(to, body, key)

    sms.send = slow  # type: ignore[method-assign]
    with ThreadPoolExecutor(max_workers=8) as senders:
        deps = dataclasses.replace(deps, senders=senders)
        started = time.monotonic()
        outcomes = notification.notify_batch([delivered(f"p-{i}") for i in range(8)], deps)
        elapsed = time.monotonic() - started
    assert outcomes == ["1 sms sent"] * 8 and len(sms.sent) == 8
    assert elapsed < 8 * 0.3 / 2


# Billing -----------------------------------------------------------------------------------------


def test_a_billing_batch_charges_each_event_once_and_a_failed_charge_fails_alone() -> None:
    store, api = FakeDocumentStore(), FakeBillingApi()
    store.set("billing_tariffs/default", {"per_delivery_minor": 4500, "currency": "INR"})
    real_charge = api.charge

    def flaky(charge: Any, idempotency_key: str) -> str:
        if idempotency_key.endswith("p-2"):
            raise Unavailable("billing API down")
        return real_charge(charge, idempotency_key)

    api.charge = flaky  # type: ignore[method-assign]
    with ThreadPoolExecutor(max_workers=4) as chargers:
        deps = billing.Deps(store, api, lambda: T0, chargers)
        events = [delivered("p-1"), delivered("p-2"), delivered("p-3"), delivered("p-1")]
        outcomes = billing.bill_batch(events, deps)
    assert outcomes[0] == "charged ch-meridian-evt-del-p-1" and outcomes[3] == "duplicate"
    assert isinstance(outcomes[1], Unavailable) and outcomes[2].startswith("charged")
    assert sorted(api.charges) == ["meridian-evt-del-p-1", "meridian-evt-del-p-3"]
    assert store.get("billing_ledger/evt-del-p-2") is None
    assert billing.bill_batch([delivered("p-1"), delivered("p-3")], deps) == ["duplicate"] * 2


# Group commit ------------------------------------------------------------------------------------


def test_group_commit_commits_a_batch_together_and_a_failing_transaction_alone(
    tmp_path: Path,
) -> None:
    store = EmbeddedDocumentStore(tmp_path)

    def prepare(event: ev.DomainEvent) -> Any:
        parcel = event.parcel_id  # type: ignore[attr-defined]
        if parcel == "p-0":
            return "nothing to write"
        if parcel == "p-3":
            raise Unavailable("lookup failed")

        def record(tx: Any) -> str:
            if parcel == "p-2":
                tx.set("poison/x", {"half": True})
                raise ValueError("poison")
            tx.set(f"seen/{parcel}", {"parcel": parcel})
            return f"recorded {parcel}"

        return record

    transactions = Transactions(store, inline=True, commit_group=store.run_transactions)
    outcomes = commit_per_event(transactions, prepare)([out(f"p-{i}") for i in range(5)])
    assert outcomes[0] == "nothing to write"
    assert outcomes[1] == "recorded p-1" and outcomes[4] == "recorded p-4"
    assert isinstance(outcomes[2], ValueError) and isinstance(outcomes[3], Unavailable)
    assert sorted(d.id for d in store.query(Query("seen"))) == ["p-1", "p-4"]
    assert store.get("poison/x") is None  # rolled back alone


def test_a_batch_runs_in_no_push_s_context() -> None:
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")

    async def scenario() -> list[Any]:
        batcher = Batcher(lambda events: [request.get() for _ in events], lambda e: None)

        async def push(name: str) -> Any:
            request.set(name)  # what a push's trace and log context would be
            return await batcher.submit(out(name))

        return await asyncio.gather(push("p-1"), push("p-2"))

    assert asyncio.run(scenario()) == ["none", "none"]


def test_batches_may_run_side_by_side_and_none_is_left_behind() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def handle_batch(events: Any) -> list[str]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return [e.event_id for e in events]

    async def scenario() -> list[Any]:
        batcher = Batcher(handle_batch, lambda e: None, max_batch=3, concurrency=2)
        pushes = []
        for i in range(20):
            pushes.append(asyncio.create_task(batcher.submit(out(f"p-{i}"))))
            await asyncio.sleep(0.004 * (i % 3))
        return await asyncio.wait_for(asyncio.gather(*pushes), 10)

    assert asyncio.run(scenario()) == [f"evt-out-p-{i}" for i in range(20)]
    assert most == 2


def test_a_batch_handler_knows_each_event_s_push_trace() -> None:
    from opentelemetry import context as otel_context

    from meridian.concurrency.batches import trace_of
    from meridian.observability import extract_context

    def trace(n: int) -> str:
        return f"00-{n:032x}-{n:016x}-01"

    async def scenario() -> list[Any]:
        batcher = Batcher(lambda events: [trace_of(e) for e in events], lambda e: None)

        async def push(n: int) -> Any:
            otel_context.attach(extract_context({"traceparent": trace(n)}))
            return await batcher.submit(out(f"p-{n}"))

        return await asyncio.gather(push(1), push(2), push(3))

    assert asyncio.run(scenario()) == [trace(1), trace(2), trace(3)]
    assert trace_of(out("p-1")) is None  # outside a batch


def test_eta_announcements_continue_the_trace_of_the_event_that_moved_the_route() -> None:
    from meridian.concurrency.batches import BATCH_TRACES

    deps, publisher = _eta()
    _route(deps, 6)
    before = len(publisher.published)
    deliveries = _deliveries(0, 2)
    trace = "00-0000000000000000000000000000abcd-00000000000000ef-01"
    token = BATCH_TRACES.set({id(deliveries[-1]): trace})  # the route's last event in the batch
    try:
        eta.project_batch(deliveries, deps)
    finally:
        BATCH_TRACES.reset(token)

    announced = [
        m for _, m in publisher.published[before:] if m.attributes["eventType"] == "RouteEtaUpdated"
    ]
    assert announced and all(m.attributes.get("traceparent") == trace for m in announced)
