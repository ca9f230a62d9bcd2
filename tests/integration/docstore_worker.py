"""Child processes for the document-store integration tests and benchmark:
``python -m tests.integration.docstore_worker COMMAND DATA_DIR [ARGS]``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from meridian.embedded.docstore import EmbeddedDocumentStore, changelog
from meridian.ports import Transaction

COUNTER = "counters/shared"


def increment(data_dir: Path, times: int) -> None:
    store = EmbeddedDocumentStore(data_dir)

    def add_one(tx: Transaction) -> None:
        doc = tx.get(COUNTER)
        assert doc is not None
        tx.update(COUNTER, {"n": doc.data["n"] + 1})

    for _ in range(times):
        store.run_transaction(add_one, max_attempts=50)


def crash_mid_transaction(data_dir: Path) -> None:
    store = EmbeddedDocumentStore(data_dir)
    original = changelog.record

    def record_then_stall(*args: object, **kwargs: object) -> None:
        original(*args, **kwargs)  # type: ignore[arg-type]
        # Both documents and their changes are written inside the open SQLite transaction;
        # tell the parent, which kills us here, before the COMMIT.
        print("before-commit", flush=True)
        time.sleep(60)

    changelog.record = record_then_stall  # type: ignore[assignment]

    def two_writes(tx: Transaction) -> None:
        tx.create("parcels/first", {"v": 1})
        tx.create("parcels/second", {"v": 2})

    store.run_transaction(two_writes)


def write_sequence(data_dir: Path, path: str, count: int, pause_s: float) -> None:
    """Write ``count`` updates, each stamped with its wall-clock send time (for latency)."""
    store = EmbeddedDocumentStore(data_dir)
    for i in range(1, count + 1):
        store.set(path, {"i": i, "sent_ns": time.time_ns()})
        time.sleep(pause_s)


if __name__ == "__main__":
    command, directory = sys.argv[1], Path(sys.argv[2])
    if command == "increment":
        increment(directory, int(sys.argv[3]))
    elif command == "crash":
        crash_mid_transaction(directory)
    elif command == "write-sequence":
        write_sequence(directory, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        raise SystemExit(f"unknown command {command}")
