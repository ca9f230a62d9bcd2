"""The command service's group commit over a fake store: moves ready together commit together,
each keeps its own outcome, and a store whose transactions are network I/O is never run on the
event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from meridian.concurrency.group_commit import Committer, Transactions
from meridian.domain.errors import Conflict
from meridian.ports import Query, Transaction
from tests.fakes import FakeDocumentStore


class LocalStore(FakeDocumentStore):
    """A store that commits a group at once, on the event loop (as the embedded one does)."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[int] = []

    def run_transactions(self, functions: Sequence[Callable[[Transaction], Any]]) -> list[Any]:
        self.groups.append(len(functions))
        return Transactions(self).run_group(functions)


def local(store: LocalStore) -> Transactions:
    """What ``meridian.adapters.transactions`` chooses for the embedded store."""
    return Transactions(store, inline=True, commit_group=store.run_transactions)


def create(path: str) -> Callable[[Transaction], str]:
    def work(tx: Transaction) -> str:
        if tx.get(path) is not None:
            raise Conflict(f"{path} exists")
        tx.create(path, {"by": "test"})
        return path

    return work


async def test_moves_that_arrive_together_commit_together_with_their_own_outcomes() -> None:
    store = LocalStore()
    store.create("parcels/taken", {})
    committer = Committer(local(store))
    paths = [f"parcels/p-{i}" for i in range(10)]
    outcomes = await asyncio.gather(
        *(committer.run(create(p)) for p in [*paths, "parcels/taken"]), return_exceptions=True
    )
    assert outcomes[:10] == paths
    assert isinstance(outcomes[10], Conflict)
    assert store.groups == [11]  # one commit for the burst
    assert all(store.get(p) is not None for p in paths)


async def test_groups_are_bounded() -> None:
    store = LocalStore()
    committer = Committer(local(store), max_group=4)
    await asyncio.gather(*(committer.run(create(f"parcels/p-{i}")) for i in range(10)))
    assert store.groups == [4, 4, 2]


async def test_a_group_that_fails_as_a_whole_fails_every_request() -> None:
    class Busy(LocalStore):
        def run_transactions(self, functions: Any) -> list[Any]:
            raise TimeoutError("store busy")

    committer = Committer(local(Busy()))
    outcomes = await asyncio.gather(
        committer.run(create("parcels/a")),
        committer.run(create("parcels/b")),
        return_exceptions=True,
    )
    assert all(isinstance(o, TimeoutError) for o in outcomes)


async def test_a_networked_store_runs_each_move_in_a_worker_thread() -> None:
    store = FakeDocumentStore()  # one by one in worker threads, as for Firestore
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    def work(tx: Transaction) -> str:
        ran_on.append(threading.get_ident())
        return "ok"

    assert await Committer(Transactions(store)).run(work) == "ok"
    assert ran_on and ran_on[0] != loop_thread


@pytest.mark.parametrize("count", [1, 3])
async def test_later_moves_after_a_flush_start_a_new_group(count: int) -> None:
    store = LocalStore()
    committer = Committer(local(store))
    for i in range(count):
        await committer.run(create(f"parcels/p-{i}"))
    assert store.groups == [1] * count


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def arrivals(committer: Committer, clock: Clock, gap_s: float, count: int) -> None:
    """``count`` moves, one after another, ``gap_s`` apart on the committer's clock."""
    for i in range(count):
        await committer.run(create(f"parcels/warm-{gap_s}-{i}"))
        clock.now += gap_s


def test_moves_wait_for_company_only_when_it_is_expected_soon() -> None:
    clock = Clock()
    committer = Committer(local(LocalStore()), company=4, max_linger_s=0.004, clock=clock)
    assert committer.linger() == 0  # nothing known yet: nobody waits
    committer.max_linger_s = 0  # (no waiting while the test sets the pace)
    asyncio.run(arrivals(committer, clock, 0.001, 600))  # 1,000 moves a second
    committer.max_linger_s = 0.004
    assert committer.linger() == pytest.approx(0.003, rel=0.01)  # three more within 3 ms
    committer.max_linger_s = 0
    asyncio.run(arrivals(committer, clock, 0.010, 100))  # then 100 a second
    committer.max_linger_s = 0.004
    assert committer.linger() == 0  # three more would take 30 ms: not worth a wait


async def test_a_waiting_group_commits_as_soon_as_its_company_is_there() -> None:
    store, clock = LocalStore(), Clock()
    committer = Committer(local(store), company=4, max_linger_s=0, clock=clock)
    await arrivals(committer, clock, 0.5, 10)
    committer.max_linger_s = 5.0  # the first move of a group now waits 1.5 s
    store.groups.clear()
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def later(i: int) -> str:
        await asyncio.sleep(0.01 * i)
        return await committer.run(create(f"parcels/p-{i}"))

    assert await asyncio.gather(*(later(i) for i in range(4))) == [
        f"parcels/p-{i}" for i in range(4)
    ]
    assert store.groups == [4]  # one commit, once the fourth came
    assert loop.time() - started < 1.0  # not the 1.5 s the first would have waited alone


async def test_a_lone_move_is_committed_after_its_linger() -> None:
    store, clock = LocalStore(), Clock()
    committer = Committer(local(store), company=4, max_linger_s=0, clock=clock)
    await arrivals(committer, clock, 0.01, 30)
    committer.max_linger_s = 1.0  # waits 30 ms for company that will not come
    store.groups.clear()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await committer.run(create("parcels/alone")) == "parcels/alone"
    assert store.groups == [1]
    assert loop.time() - started >= 0.025  # it did wait for company


def test_a_group_committed_one_by_one_keeps_each_transaction_independent() -> None:
    # What a store without a group commit of its own gets (Firestore): the assertions the
    # embedded store's ``run_transactions`` meets in its contract suite.
    store = FakeDocumentStore()
    store.create("counters/taken", {"n": 0})

    def write(name: str) -> Callable[[Transaction], str]:
        def work(tx: Transaction) -> str:
            tx.create(f"counters/{name}", {"n": 1})
            tx.create(f"counters/{name}-log", {"of": name})
            return name

        return work

    def refused(tx: Transaction) -> None:
        taken = tx.get("counters/taken")
        tx.create("counters/fresh", {"n": 1})
        if taken is not None:
            raise Conflict("taken already")

    outcomes = Transactions(store).run_group([write("a"), refused, write("b")])
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], Conflict)
    assert store.get("counters/fresh") is None  # the refused one rolled back whole
    assert {d.id for d in store.query(Query("counters"))} == {"taken", "a", "a-log", "b", "b-log"}
