"""The command service's group commit over a fake store: moves ready together commit together,
each keeps its own outcome, and a store whose transactions are network I/O is never run on the
event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from meridian.domain.errors import Conflict
from meridian.ports import Transaction
from services.command.commit import Committer
from tests.fakes import FakeDocumentStore


class LocalStore(FakeDocumentStore):
    local_transactions = True

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[int] = []

    def run_transactions(
        self, functions: Sequence[Callable[[Transaction], Any]], max_attempts: int = 5
    ) -> list[Any]:
        self.groups.append(len(functions))
        return super().run_transactions(functions, max_attempts)


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
    committer = Committer(store)
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
    committer = Committer(store, max_group=4)
    await asyncio.gather(*(committer.run(create(f"parcels/p-{i}")) for i in range(10)))
    assert store.groups == [4, 4, 2]


async def test_a_group_that_fails_as_a_whole_fails_every_request() -> None:
    class Busy(LocalStore):
        def run_transactions(self, functions: Any, max_attempts: int = 5) -> list[Any]:
            raise TimeoutError("store busy")

    committer = Committer(Busy())
    outcomes = await asyncio.gather(
        committer.run(create("parcels/a")),
        committer.run(create("parcels/b")),
        return_exceptions=True,
    )
    assert all(isinstance(o, TimeoutError) for o in outcomes)


async def test_a_networked_store_runs_each_move_in_a_worker_thread() -> None:
    store = FakeDocumentStore()  # local_transactions = False, like Firestore
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    def work(tx: Transaction) -> str:
        ran_on.append(threading.get_ident())
        return "ok"

    assert await Committer(store).run(work) == "ok"
    assert ran_on and ran_on[0] != loop_thread


@pytest.mark.parametrize("count", [1, 3])
async def test_later_moves_after_a_flush_start_a_new_group(count: int) -> None:
    store = LocalStore()
    committer = Committer(store)
    for i in range(count):
        await committer.run(create(f"parcels/p-{i}"))
    assert store.groups == [1] * count
