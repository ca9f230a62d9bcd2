"""What one database per store buys the command service (#24), in seconds: its commits' latency
while six reactor-like processes commit as fast as they can, with every service in one shared
SQLite file (as before) and with each in its own store (as now).

    .venv/bin/python -m loadtest.store_split_probe [seconds per layout, default 5]

The command commits a parcel move with its request key every 5 ms (200/s) in the main process;
each reactor process commits a projection and its ledger entry in a loop. Printed per layout:
the command's commit latency p50/p99/max, the moves that gave up on the lock
(TransactionContention), and the reactors' commits. Not part of ``make bench``:
the whole-platform figure is ``loadtest/bench_platform.py``'s; this isolates the lock.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

from meridian.catalog import load_catalog
from meridian.documents.ownership import Ownership
from meridian.domain.errors import TransactionContention
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.docstore.stores import ServiceStores
from meridian.ports import DocumentStore, Transaction

REACTORS = {  # service: the projection it writes per event
    "eta": "parcel_status",
    "notification": "notifications",
    "billing": "billing_ledger",
    "client-webhook": "webhook_deliveries",
    "driver-scoring": "driver_scores",
    "live-map-writer": "live_map",
}


def _open(data_dir: Path, service: str, split: bool) -> DocumentStore:
    if split:
        return ServiceStores(data_dir, Ownership.of(load_catalog()), service)
    return EmbeddedDocumentStore(data_dir)


def _reactor(
    data_dir: str, service: str, split: bool, until: float, counts: dict[str, int]
) -> None:
    store = _open(Path(data_dir), service, split)
    collection, n = REACTORS[service], 0
    body = {"stops": {f"s{i}": {"eta": i, "sla": "met"} for i in range(20)}}

    while time.time() < until:

        def project(tx: Transaction, n: int = n) -> None:
            tx.set(f"{collection}/d-{n % 500}", {**body, "n": n})
            tx.create(f"processed_events/{service}:e-{n}", {"at": n})

        store.run_transaction(project)
        n += 1
    counts[service] = n


def _run(split: bool, seconds: float) -> tuple[list[float], int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        command = _open(data_dir, "command", split)
        for service in REACTORS:  # each store created before the clock starts
            _open(data_dir, service, split)
        counts = multiprocessing.Manager().dict()
        until = time.time() + seconds + 1
        reactors = [
            multiprocessing.Process(target=_reactor, args=(tmp, s, split, until, counts))
            for s in REACTORS
        ]
        for p in reactors:
            p.start()
        time.sleep(1)  # the reactors are committing
        latencies, n, gave_up = [], 0, 0
        while time.time() < until - 0.05:

            def move(tx: Transaction, n: int = n) -> None:
                tx.get(f"parcels/p-{n % 1000}")
                tx.set(f"parcels/p-{n % 1000}", {"status": "DELIVERED", "n": n})
                tx.create(f"idempotency_keys/k-{n}", {"status": 202})

            started = time.perf_counter()
            try:
                command.run_transaction(move)
            except TransactionContention:
                gave_up += 1  # five attempts of 5 s busy timeout each: counted, not timed
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            n += 1
            time.sleep(max(0.0, 0.005 - latencies[-1] / 1000))
        for p in reactors:
            p.join()
        return latencies, gave_up, sum(counts.values())


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    for split in (False, True):
        latencies, gave_up, reactor_commits = _run(split, seconds)
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        print(
            f"{'one store per service' if split else 'one shared file     '}: command commit"
            f" p50 {q[49]:.2f} ms p99 {q[98]:.2f} ms max {max(latencies):.1f} ms"
            f" ({len(latencies)} moves, {gave_up} gave up); reactors {reactor_commits / seconds:.0f} commits/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
