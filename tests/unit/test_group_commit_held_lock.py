"""The group commit while the store's write lock is held elsewhere (issue #24 item 2), over a fake
store whose lock the test holds and frees: the event loop keeps serving while a group waits on
the writer thread, groups commit in the order they formed, the committer sheds past its bounds
(and only then), and every request it accepted is committed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from meridian import metrics
from meridian.concurrency.group_commit import Committer, Transactions, WouldWait
from meridian.domain.errors import Overloaded
from meridian.edge.problems import problem_for
from meridian.ports import Transaction
from tests.fakes import FakeDocumentStore


class LockedStore(FakeDocumentStore):
    """A store whose write lock another process may hold (``hold``/``free``): tried at once it
    raises ``WouldWait``; waited for, it blocks its thread until freed. Records the paths in the
    order they commit and the thread each group ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.unlocked = threading.Event()
        self.unlocked.set()
        self.committed: list[str] = []
        self.ran_on: list[int] = []

    def hold(self) -> None:
        self.unlocked.clear()

    def free(self) -> None:
        self.unlocked.set()

    def commit_group(self, functions: Sequence[Callable[[Transaction], Any]]) -> list[Any]:
        assert self.unlocked.wait(10), "the lock was never freed"
        return self._commit(functions)

    def commit_group_at_once(self, functions: Sequence[Callable[[Transaction], Any]]) -> list[Any]:
        if not self.unlocked.is_set():
            raise WouldWait("another process holds the write lock")
        return self._commit(functions)

    def _commit(self, functions: Sequence[Callable[[Transaction], Any]]) -> list[Any]:
        self.ran_on.append(threading.get_ident())
        outcomes = Transactions(self).run_group(functions)
        self.committed += [o for o in outcomes if isinstance(o, str)]
        return outcomes

    def transactions(self) -> Transactions:
        """What ``meridian.adapters.transactions`` chooses for the embedded store."""
        return Transactions(
            self,
            inline=True,
            commit_group=self.commit_group,
            commit_group_at_once=self.commit_group_at_once,
        )


def create(path: str) -> Callable[[Transaction], str]:
    def work(tx: Transaction) -> str:
        tx.create(path, {"by": "test"})
        return path

    return work


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


async def test_a_group_that_would_wait_for_the_lock_waits_on_a_thread_while_the_loop_serves() -> (
    None
):
    store = LockedStore()
    committer = Committer(store.transactions())
    store.hold()
    move = asyncio.create_task(committer.run(create("parcels/p-1")))
    # Another request of the same process (a /healthz) is served, many times, meanwhile.
    served = 0
    for _ in range(50):
        await asyncio.sleep(0.002)
        served += 1
    assert served == 50 and not move.done()
    assert committer.waiting == 1
    store.free()
    assert await asyncio.wait_for(move, 5) == "parcels/p-1"
    assert store.committed == ["parcels/p-1"]
    assert store.ran_on[-1] != threading.get_ident()  # committed on the writer thread
    assert committer.waiting == 0
    # Once the writer has caught up, groups commit on the loop again.
    assert await committer.run(create("parcels/p-2")) == "parcels/p-2"
    assert store.ran_on[-1] == threading.get_ident()
    committer.close()


async def test_groups_that_form_while_the_writer_has_work_queue_behind_it_in_order() -> None:
    store = LockedStore()
    committer = Committer(store.transactions())
    store.hold()
    first = asyncio.create_task(committer.run(create("parcels/first")))
    await until(lambda: committer.waiting == 1 and not committer._pending)
    # The lock is still held by the writer's first try; a later group must not overtake it
    # on the loop even at a moment the lock is free: it is tried there only once the writer
    # has caught up.
    calls_at_once: list[int] = []
    original = store.commit_group_at_once

    def counting(functions: Sequence[Callable[[Transaction], Any]]) -> list[Any]:
        calls_at_once.append(len(functions))
        return original(functions)

    store.commit_group_at_once = counting  # type: ignore[method-assign]
    later = [asyncio.create_task(committer.run(create(f"parcels/later-{i}"))) for i in range(3)]
    await until(lambda: committer.waiting == 4 and not committer._pending)
    store.free()
    await asyncio.wait_for(asyncio.gather(first, *later), 5)
    assert store.committed == ["parcels/first", *(f"parcels/later-{i}" for i in range(3))]
    assert calls_at_once == []  # the later group went to the writer, behind the first
    committer.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_sheds_once_the_oldest_waiting_request_has_waited_past_the_bound_and_stops_after() -> (
    None
):
    store = LockedStore()
    clock = Clock()
    committer = Committer(store.transactions(), clock=clock, max_wait_s=1.0)
    shed_before = metrics.COMMIT_SHED._value.get()
    store.hold()
    accepted = [asyncio.create_task(committer.run(create("parcels/a-0")))]
    await until(lambda: committer.waiting == 1 and not committer._pending)
    clock.now += 0.5  # the oldest has waited half a second: still accepted
    accepted.append(asyncio.create_task(committer.run(create("parcels/a-1"))))
    await until(lambda: committer.waiting == 2 and not committer._pending)
    clock.now += 0.6  # now 1.1 s
    with pytest.raises(Overloaded) as shed:
        await committer.run(create("parcels/shed"))
    assert shed.value.retry_after_s >= 1
    assert metrics.COMMIT_SHED._value.get() == shed_before + 1
    # Answered as a problem: 503, its Retry-After, nothing done.
    answer = problem_for(shed.value)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == str(shed.value.retry_after_s)
    assert answer.headers["content-type"] == "application/problem+json"
    assert b'"type":"https://meridian.dev/problems/overloaded"' in answer.body
    store.free()
    assert await asyncio.wait_for(asyncio.gather(*accepted), 5) == ["parcels/a-0", "parcels/a-1"]
    # Accepted requests were all committed; the shed one was never run.
    assert store.committed == ["parcels/a-0", "parcels/a-1"]
    assert store.get("parcels/shed") is None
    # The queue drained: no more shedding, however much time has passed.
    clock.now += 10
    assert await committer.run(create("parcels/after")) == "parcels/after"
    committer.close()


async def test_sheds_when_too_many_requests_wait_however_young() -> None:
    store = LockedStore()
    committer = Committer(store.transactions(), clock=Clock(), max_waiting=3)
    store.hold()
    accepted = [asyncio.create_task(committer.run(create("parcels/a-0")))]
    await until(lambda: committer.waiting == 1 and not committer._pending)
    accepted += [asyncio.create_task(committer.run(create(f"parcels/a-{i}"))) for i in (1, 2)]
    await until(lambda: committer.waiting == 3)
    with pytest.raises(Overloaded):
        await committer.run(create("parcels/shed"))
    store.free()
    assert len(await asyncio.wait_for(asyncio.gather(*accepted), 5)) == 3
    assert store.committed == ["parcels/a-0", "parcels/a-1", "parcels/a-2"]
    committer.close()


async def test_nothing_is_shed_while_the_lock_is_free_however_many_arrive_at_once() -> None:
    store = LockedStore()
    committer = Committer(store.transactions(), max_waiting=3)
    paths = [f"parcels/p-{i}" for i in range(20)]
    assert await asyncio.gather(*(committer.run(create(p)) for p in paths)) == paths
    assert all(ran == threading.get_ident() for ran in store.ran_on)


async def test_a_group_that_fails_on_the_writer_fails_its_requests_and_the_loop_carries_on() -> (
    None
):
    class Failing(LockedStore):
        def commit_group(self, functions: Sequence[Callable[[Transaction], Any]]) -> list[Any]:
            assert self.unlocked.wait(10)
            raise TimeoutError("contention after retries")

    store = Failing()
    committer = Committer(store.transactions())
    store.hold()
    moves = [asyncio.create_task(committer.run(create(f"parcels/p-{i}"))) for i in range(2)]
    await until(lambda: committer.waiting == 2 and not committer._pending)
    store.free()
    outcomes = await asyncio.gather(*moves, return_exceptions=True)
    assert all(isinstance(o, TimeoutError) for o in outcomes)
    assert committer.waiting == 0
    assert await committer.run(create("parcels/next")) == "parcels/next"
    committer.close()


async def test_the_queue_depth_is_in_the_metrics_while_requests_wait() -> None:
    store = LockedStore()
    committer = Committer(store.transactions())
    store.hold()
    moves = [asyncio.create_task(committer.run(create(f"parcels/p-{i}"))) for i in range(3)]
    await until(lambda: committer.waiting == 3 and not committer._pending)
    assert b"meridian_commit_queue_depth 3.0" in metrics.exposition()
    store.free()
    await asyncio.gather(*moves)
    assert b"meridian_commit_queue_depth 0.0" in metrics.exposition()
    assert b'meridian_commit_groups_total{where="writer_thread"}' in metrics.exposition()
    committer.close()
