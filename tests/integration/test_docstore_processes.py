"""The embedded document store shared by several processes on one data directory."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Snapshot

ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tests.integration.docstore_worker"]


def test_four_processes_incrementing_one_counter_lose_no_update(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    store.create("counters/shared", {"n": 0})
    workers = [
        subprocess.Popen([*WORKER, "increment", str(tmp_path), "250"], cwd=ROOT) for _ in range(4)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0, 0]
    counter = store.get("counters/shared")
    assert counter is not None and counter.data == {"n": 1000}
    # Every increment is one change record, so the Eventarc tail sees exactly 1000 updates.
    changes = store.changes.read_changes("check", limit=2000)
    assert [c.kind for c in changes].count("updated") == 1000


def test_a_process_killed_before_the_commit_of_a_transaction_leaves_neither_write(
    tmp_path: Path,
) -> None:
    EmbeddedDocumentStore(tmp_path).close()
    worker = subprocess.Popen(
        [*WORKER, "crash", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "before-commit"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    store = EmbeddedDocumentStore(tmp_path)
    assert store.get("parcels/first") is None
    assert store.get("parcels/second") is None
    assert store.changes.read_changes("check", 10) == []
    store.create("parcels/first", {"v": 1})  # the lock died with the process: the store is writable
    assert store.changes.latest_seq() == 1


def test_a_listener_sees_every_write_of_another_process_in_order(tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(tmp_path)
    store.create("live_map/veh-7", {"i": 0})

    async def scenario() -> list[Snapshot]:
        listener = store.watch_document("live_map/veh-7")
        seen = [await asyncio.wait_for(anext(listener), 20)]
        writer = await asyncio.create_subprocess_exec(
            *WORKER, "write-sequence", str(tmp_path), "live_map/veh-7", "30", "0", cwd=ROOT
        )
        while seen[-1].documents[0].data["i"] != 30:
            seen.append(await asyncio.wait_for(anext(listener), 20))
        assert await writer.wait() == 0
        await listener.aclose()  # type: ignore[attr-defined]
        return seen

    seen = asyncio.run(scenario())
    assert [s.documents[0].data["i"] for s in seen] == list(range(31))
    assert [c.kind for s in seen[1:] for c in s.changes] == ["modified"] * 30
