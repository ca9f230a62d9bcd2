"""The webhook sender on fakes: deliveries claimed as they are enqueued are sent once, by the
sender threads, and a claim that waited too long for a slot is left to the poll; each attempt is
counted once, sent or failed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from meridian.app import webhooks
from meridian.domain import events as ev
from services.reactors.webhook import handlers, worker
from services.reactors.webhook.worker import Worker
from tests.fakes import FakeDocumentStore
from tests.fakes_reactors import FakeWebhookSender
from tests.unit.test_metrics import counter

LOCAL = webhooks.WebhookPolicy(webhooks.AllowList.parse("127.0.0.0/8"))


def _events(count: int) -> list[ev.ShipmentCreated]:
    now = datetime.now(UTC)
    return [
        ev.ShipmentCreated(
            event_id=f"evt-{i}",
            occurred_at=now,
            shipment_id="s-1",
            client_id="c-1",
            parcel_ids=("p",),
        )
        for i in range(count)
    ]


def _deps(sender: FakeWebhookSender) -> handlers.Deps:
    deps = handlers.Deps(FakeDocumentStore(), sender, LOCAL, lambda: datetime.now(UTC))
    webhooks.register_endpoint(
        deps.store, "c-1", "http://127.0.0.1:1/hook", [], LOCAL, deps.clock()
    )
    return deps


def test_enqueue_claimed_leases_the_first_attempt_in_the_enqueue_itself() -> None:
    deps = _deps(FakeWebhookSender([200]))
    events = _events(3)
    enqueued, claimed = handlers.enqueue_claimed([*events, events[0]], deps)
    assert [len(p) for p in enqueued] == [1, 1, 1, 0]
    assert [c["path"] for c in claimed] == [p for ps in enqueued for p in ps]
    assert all(c["attempts"] == 1 and c["endpoint"]["status"] == "active" for c in claimed)
    # Leased: neither the poll nor a claim by path takes them again.
    assert handlers.claim_due(deps, limit=10) == []
    assert handlers.claim_paths(deps, [c["path"] for c in claimed]) == []
    assert [handlers.send_claimed(c, deps) for c in claimed] == ["delivered"] * 3
    assert handlers.enqueue_claimed(events, deps) == ([[], [], []], [])  # redelivered: nothing
    log = webhooks.delivery_log(deps.store, "c-1", claimed[0]["webhook_id"])
    assert all(e["attempts"] == 1 and [x["status"] for x in e["log"]] == [200] for e in log)


def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_the_worker_sends_claims_once_each_and_leaves_stale_ones_to_the_poll() -> None:
    sender = FakeWebhookSender([200])
    deps = _deps(sender)
    _, fresh = handlers.enqueue_claimed(_events(8), deps)

    async def scenario() -> None:
        sending = Worker(deps, concurrency=3, poll_s=60)
        task = asyncio.create_task(sending.run())
        await asyncio.sleep(0.05)
        sending.send_now(fresh[:6])
        stale_at = time.monotonic() - worker.FRESH_CLAIM_S - 1
        sending._arrived([(stale_at, c) for c in fresh[6:]])
        await asyncio.to_thread(_until, lambda: len(sender.requests) >= 6)
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(scenario())
    assert sorted(h["webhook-id"] for _, h, _ in sender.requests) == [f"evt-{i}" for i in range(6)]
    statuses = {c["event_id"]: deps.store.get(c["path"]).data["status"] for c in fresh}  # type: ignore[union-attr]
    assert statuses == {f"evt-{i}": "delivered" if i < 6 else "pending" for i in range(8)}


def test_each_recorded_attempt_is_counted_once_sent_or_failed() -> None:
    deps = _deps(FakeWebhookSender([503, None, 200]))
    events = _events(1)
    _, claimed = handlers.enqueue_claimed(events, deps)
    before = (
        counter("meridian_webhooks_total", outcome="sent"),
        counter("meridian_webhooks_total", outcome="failed"),
    )

    def moved() -> tuple[float, float]:
        return (
            counter("meridian_webhooks_total", outcome="sent") - before[0],
            counter("meridian_webhooks_total", outcome="failed") - before[1],
        )

    assert handlers.send_claimed(claimed[0], deps) == "retry scheduled"  # answered 503
    assert moved() == (0, 1)
    assert handlers.send_claimed({**claimed[0], "attempts": 2}, deps) == "retry scheduled"  # none
    assert moved() == (0, 2)
    assert handlers.send_claimed({**claimed[0], "attempts": 3}, deps) == "delivered"
    assert moved() == (1, 2)
    assert handlers.enqueue_claimed(events, deps) == ([[]], [])  # redelivered: nothing to send
    assert moved() == (1, 2)
