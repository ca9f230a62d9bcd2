"""What the group commit's lock-free try costs on the event loop (issue #24 item 2).

The command service's ``Committer`` commits a group on the event loop only if the store's write
lock is free at once (``Transactions.commit_group_at_once``, ``db.without_waiting``), and
otherwise hands it to its writer thread. This measures the CPU per move of that path against the
path it replaced (the group committed on the loop with ``commit_group``, which would have waited
for the lock), uncontended, in one process, over an embedded store: interleaved rounds of each,
groups of one move (moves one after another) and of six (six awaited together).

    .venv/bin/python -m loadtest.bench_commit_at_once [MOVES_PER_ROUND] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meridian.concurrency.group_commit import Committer, Transactions
from meridian.config import Settings
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Transaction


def move(parcel: str, key: str) -> Callable[[Transaction], str]:
    """A parcel move's shape: the replay check, a read, the write and the recorded answer."""

    def work(tx: Transaction) -> str:
        if tx.get(f"requests/{key}") is not None:
            return "replayed"
        found = tx.get(f"parcels/{parcel}")
        moves = 0 if found is None else int(str(found.data.get("moves", 0)))
        tx.set(f"parcels/{parcel}", {"status": "DELIVERED", "moves": moves + 1})
        tx.create(f"requests/{key}", {"status": 202})
        return "accepted"

    return work


async def cpu_per_move(committer: Committer, moves: int, group: int, tag: str) -> float:
    started = time.process_time()
    for i in range(0, moves, group):
        await asyncio.gather(
            *(committer.run(move(f"p-{(i + j) % 500}", f"{tag}-{i + j}")) for j in range(group))
        )
    return (time.process_time() - started) / moves * 1000


def main(moves: int = 2000, rounds: int = 3) -> None:
    from meridian import adapters

    with tempfile.TemporaryDirectory() as directory:
        store = EmbeddedDocumentStore(Path(directory), rereads=False)
        waiting = Committer(Transactions(store, inline=True, commit_group=store.run_transactions))
        at_once = Committer(adapters.transactions(Settings(data_dir=Path(directory)), store))
        assert at_once._run_group_at_once is not at_once._run_group, "no lock-free try wired"
        results: dict[tuple[str, int], list[float]] = {}

        async def run() -> None:
            for round_ in range(rounds):
                # Each first in turn: the database grows as the rounds go.
                both = [("waits", waiting), ("at once", at_once)]
                for group in (1, 6):
                    for name, committer in both if round_ % 2 else both[::-1]:
                        tag = f"{name}-{group}-{round_}"
                        cost = await cpu_per_move(committer, moves, group, tag)
                        results.setdefault((name, group), []).append(cost)

        asyncio.run(run())
        store.close()
    print(f"CPU-ms per move, {rounds} interleaved rounds of {moves} moves each (median; all)")
    for (name, group), costs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        shown = ", ".join(f"{c:.3f}" for c in costs)
        print(f"  group of {group}, {name:8}: {statistics.median(costs):.3f}  ({shown})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
