"""Embedded document store: transactional create-if-absent on one process, and write-to-listener
latency across processes, beside raw sqlite3 with the same WAL settings.

The command path's idempotent write is a transaction that reads a ledger document and creates it
if absent; the live map's push is a listener in one process seeing a write made in another.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Transaction

ROOT = Path(__file__).resolve().parent.parent
WRITES = 5000
LISTENED_WRITES = 300


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _raw_sqlite_baseline(directory: Path) -> float:
    """Rows/s of a bare INSERT, one BEGIN IMMEDIATE … COMMIT per row, same pragmas."""
    conn = sqlite3.connect(directory / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("CREATE TABLE rows (path TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID")
    started = time.perf_counter()
    for i in range(WRITES):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO rows VALUES (?, ?)", (f"requests/r-{i}", '{"status":"ACCEPTED"}'))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return WRITES / elapsed


def _create_if_absent(directory: Path) -> tuple[float, list[float]]:
    # Default settings: the JSON1 expression indexes on DEFAULT_INDEXED_FIELDS included.
    store = EmbeddedDocumentStore(directory)
    latencies = []

    def make(path: str) -> object:
        def first_response(tx: Transaction) -> object:
            seen = tx.get(path)
            if seen is not None:
                return seen.data
            tx.create(path, {"status": "ACCEPTED", "response": {"code": 202}})
            return None

        return first_response

    started = time.perf_counter()
    for i in range(WRITES):
        t0 = time.perf_counter()
        store.run_transaction(make(f"requests/r-{i}"))  # type: ignore[arg-type]
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    store.close()
    return WRITES / elapsed, latencies


async def _listen(directory: Path) -> list[float]:
    store = EmbeddedDocumentStore(directory)
    store.create("live_map/veh-7", {"i": 0, "sent_ns": time.time_ns()})
    listener = store.watch_document("live_map/veh-7")
    await anext(listener)
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.bench_docstore",
        "writer",
        str(directory),
        str(LISTENED_WRITES),
        cwd=ROOT,
    )
    latencies = []
    while True:
        snapshot = await asyncio.wait_for(anext(listener), 30)
        received = time.time_ns()
        data = snapshot.documents[0].data
        latencies.append((received - data["sent_ns"]) / 1e9)
        if data["i"] == LISTENED_WRITES:
            break
    await writer.wait()
    await listener.aclose()  # type: ignore[attr-defined]
    store.close()
    return latencies


def _writer(directory: Path, count: int) -> None:
    store = EmbeddedDocumentStore(directory)
    for i in range(1, count + 1):
        store.set("live_map/veh-7", {"i": i, "sent_ns": time.time_ns()})
        # Irregular pauses, so writes land both while the listener polls fast and after it idled.
        time.sleep(0.002 if i % 10 else 0.1)


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "raw").mkdir()
        baseline = _raw_sqlite_baseline(base / "raw")
        rate, latencies = _create_if_absent(base / "store")
        listened = asyncio.run(_listen(base / "listen"))
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    l50, l95 = _percentile(listened, 0.5), _percentile(listened, 0.95)
    return f"""## Document store (embedded, SQLite WAL)

| operation | per second | p50 | p99 | vs baseline |
|---|---:|---:|---:|---:|
| raw sqlite3 INSERT, one `BEGIN IMMEDIATE` transaction per row (baseline) | {baseline:,.0f} | | | 1.00× |
| transactional create-if-absent (read + create + change record), one process | {rate:,.0f} \
| {p50 * 1e3:.2f} ms | {p99 * 1e3:.2f} ms | {rate / baseline:.2f}× |

Write-to-listener latency across processes ({len(listened)} writes by a second process, a
`watch_document` listener in this one): p50 {l50 * 1e3:.1f} ms, p95 {l95 * 1e3:.1f} ms,
max {max(listened) * 1e3:.1f} ms (mean {statistics.mean(listened) * 1e3:.1f} ms).
Aims: ≥ 5,000 transactional writes/s; listener p95 ≤ 50 ms."""


if __name__ == "__main__":
    if sys.argv[1:2] == ["writer"]:
        _writer(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        print(run())
