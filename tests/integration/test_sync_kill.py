"""Kill -9 a sync job mid-page and run it again: the same end state, nothing applied twice.

The job runs in its own process (the apply of ``services.sync.jobs``, on the embedded document
store, with small transactions and a slow clock so that it is surely mid-page when killed), is
killed with SIGKILL once part of the page has committed, and is then run again to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from meridian.domain.events import SyncOrigin, SyncRequested
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.ports import Query
from services.sync.apply import apply_request
from services.sync.entities import CLIENTS, IDENTITIES_JOB, LINKS

ROWS = 600
ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
import psycopg
from psycopg.rows import dict_row
from meridian.domain.events import SyncOrigin, SyncRequested
from meridian.embedded.docstore import EmbeddedDocumentStore
from services.sync import apply
from services.sync.entities import CLIENTS, IDENTITIES_JOB

apply.CHUNK = 10
def slow_clock():
    time.sleep(0.02)
    return datetime.now(UTC)
request = SyncRequested(event_id="evt-kill", occurred_at=datetime.now(UTC), request_id="kill",
    entity="clients", origin=SyncOrigin.SCHEDULED, requester="test")
with psycopg.connect(sys.argv[1], autocommit=True, row_factory=dict_row) as conn:
    apply.apply_request(EmbeddedDocumentStore(Path(sys.argv[2])), conn, CLIENTS, request,
                        IDENTITIES_JOB, 1000, slow_clock)
"""


def _links(store: EmbeddedDocumentStore) -> int:
    return len(store.query(Query(LINKS)))


def test_a_job_killed_mid_page_and_run_again_applies_each_row_once(
    legacy_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        conn.execute(
            "INSERT INTO clients (id, name) SELECT 'c-' || lpad(n::text, 4, '0'), 'Client ' || n"
            " FROM generate_series(1, %s) AS n",
            (ROWS,),
        )
    store = EmbeddedDocumentStore(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, legacy_dsn, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while _links(store) < ROWS // 4:
            assert child.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "the job applied nothing within a minute"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    applied_before = {d.path: d.data["updated_at"] for d in store.query(Query(CLIENTS.collection))}
    assert ROWS // 4 <= len(applied_before) < ROWS  # killed mid-page

    request = SyncRequested(
        event_id="evt-kill",
        occurred_at=datetime.now(UTC),
        request_id="kill",
        entity="clients",
        origin=SyncOrigin.SCHEDULED,
        requester="test",
    )
    with psycopg.connect(legacy_dsn, autocommit=True, row_factory=dict_row) as conn:
        outcome = apply_request(
            store, conn, CLIENTS, request, IDENTITIES_JOB, 1000, lambda: datetime.now(UTC)
        )

    assert outcome.created == ROWS - len(applied_before)
    assert outcome.unchanged == len(applied_before) and outcome.updated == 0
    documents = {d.path: d.data for d in store.query(Query(CLIENTS.collection))}
    assert len(documents) == ROWS and _links(store) == ROWS
    # What committed before the kill was not written again.
    assert {p: documents[p]["updated_at"] for p in applied_before} == applied_before
    assert all(d["_sync"]["version"] == 1 for d in documents.values())
