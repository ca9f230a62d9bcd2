"""The scheduled pull over a real PostgreSQL: pages of the monolith's changes since the cursor,
one SyncRequested each, missing neither of the two rows ``updated_at`` polling classically
misses. Each of those tests runs the pull also with its fix turned off (``Rules``) and shows the
row then missed, so the test is known to catch the miss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.config import Legacy, Settings
from meridian.domain.errors import Unavailable
from meridian.domain.events import SyncRequested
from meridian.ports import Message
from services.sync.legacy import as_meridian
from services.sync.pull import Rules, read_cursor, run_pull
from tests.fakes import FakePublisher

CODEC = EventCodec(load_catalog())
NAIVE_KEYSET = Rules(keyset_on_id=False)
NO_HORIZON = Rules(open_transaction_horizon=False)


def _settings(dsn: str, page_size: int = 2) -> Settings:
    return Settings(legacy=Legacy(dsn=dsn, page_size=page_size))


def _requests(publisher: FakePublisher) -> list[SyncRequested]:
    found = []
    for topic, message in publisher.published:
        assert topic == "sync.requests"
        event = CODEC.from_message(message.data, message.attributes)
        assert isinstance(event, SyncRequested)
        found.append(event)
    return found


def _ids_in_pages(dsn: str, requests: list[SyncRequested]) -> set[str]:
    """The rows the published pages cover, read as the jobs read them: by their bounds."""
    covered: set[str] = set()
    with psycopg.connect(dsn) as conn:
        for r in requests:
            lower = (r.after_updated_at, r.after_id) if r.after_updated_at else None
            rows = conn.execute(
                "SELECT id FROM clients WHERE written_by = 'monolith' AND (%(lower)s::boolean IS NULL"
                " OR (updated_at, id) > (%(at)s, %(id)s))"
                " AND (updated_at, id) <= (%(through_at)s, %(through_id)s)",
                {
                    "lower": None if lower is None else True,
                    "at": lower[0] if lower else None,
                    "id": lower[1] if lower else None,
                    "through_at": r.through_updated_at,
                    "through_id": r.through_id,
                },
            ).fetchall()
            covered |= {row[0] for row in rows}
    return covered


class ApplyingPublisher(FakePublisher):
    """Publishes, and reads each page's rows at once, as a job that runs promptly would: what a
    page covered is what it covered when published, not what its bounds hold later."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.applied: set[str] = set()

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        ids = super().publish(topic, messages)
        self.applied |= _ids_in_pages(self.dsn, _requests_in(messages))
        return ids


def _requests_in(messages: Sequence[Message]) -> list[SyncRequested]:
    events = [CODEC.from_message(m.data, m.attributes) for m in messages]
    assert all(isinstance(e, SyncRequested) for e in events)
    return events  # type: ignore[return-value]


def _add_clients(conn: psycopg.Connection[Any], *ids: str) -> None:
    for client_id in ids:
        conn.execute("INSERT INTO clients (id, name) VALUES (%s, %s)", (client_id, client_id))


@pytest.mark.parametrize(("rules", "missed"), [(Rules(), set()), (NAIVE_KEYSET, {"c", "d", "e"})])
def test_rows_sharing_a_timestamp_across_a_page_boundary(
    legacy_dsn: str, rules: Rules, missed: set[str]
) -> None:
    # Five rows stamped alike, as a bulk load that sets updated_at itself does (the schema's
    # trigger, which stamps each write with its own clock reading, is bypassed for it).
    with psycopg.connect(legacy_dsn) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        for client_id in ("a", "b", "c", "d", "e"):
            conn.execute(
                "INSERT INTO clients (id, name, updated_at) VALUES (%s, %s, now())",
                (client_id, client_id),
            )
    publisher = FakePublisher()

    run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC, rules=rules)
    run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC, rules=rules)

    assert _ids_in_pages(legacy_dsn, _requests(publisher)) == {"a", "b", "c", "d", "e"} - missed


@pytest.mark.parametrize(("rules", "missed"), [(Rules(), set()), (NO_HORIZON, {"late"})])
def test_a_transaction_committing_after_the_cursor_passed_its_older_timestamp(
    legacy_dsn: str, rules: Rules, missed: set[str]
) -> None:
    publisher = ApplyingPublisher(legacy_dsn)
    late = psycopg.connect(legacy_dsn)
    try:
        _add_clients(late, "late")  # stamped now, committed after the pull below has run
        with psycopg.connect(legacy_dsn) as conn:
            _add_clients(conn, "early")
        run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC, rules=rules)
        late.commit()
    finally:
        late.close()
    run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC, rules=rules)

    assert publisher.applied == {"early", "late"} - missed


def test_a_long_read_only_transaction_does_not_hold_the_pull_back(legacy_dsn: str) -> None:
    # The monolith's reports read its tables in long transactions; they write nothing, hold no
    # transaction id, and so cannot commit a row behind the cursor.
    report = psycopg.connect(legacy_dsn)
    try:
        report.execute("SELECT count(*) FROM parcels").fetchone()  # a transaction, now open
        with psycopg.connect(legacy_dsn) as conn:
            _add_clients(conn, "a", "b")
        publisher = ApplyingPublisher(legacy_dsn)
        run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC)
        assert report.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        report.close()

    assert publisher.applied == {"a", "b"}


def test_a_writing_transaction_left_open_holds_the_pull_at_its_start(legacy_dsn: str) -> None:
    writer = psycopg.connect(legacy_dsn)
    try:
        writer.execute("UPDATE parcels SET status = status")  # no row, but a transaction id
        writer.execute("SELECT pg_current_xact_id()")
        with psycopg.connect(legacy_dsn) as conn:
            _add_clients(conn, "after")
        publisher = ApplyingPublisher(legacy_dsn)
        run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC)
        assert publisher.applied == set()  # it might still commit a row stamped before "after"
    finally:
        writer.close()


def test_one_event_per_page_and_the_cursor_at_the_last_row(legacy_dsn: str) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        _add_clients(conn, "a", "b", "c")
    publisher = FakePublisher()

    assert run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC) == 2
    first, second = _requests(publisher)
    assert (first.after_id, first.through_id) == (None, "b")
    assert (second.after_id, second.through_id) == ("b", "c")
    assert first.origin == "scheduled" and first.entity == "clients"
    assert first.request_id != second.request_id
    with psycopg.connect(legacy_dsn) as conn:
        conn.row_factory = psycopg.rows.dict_row
        cursor = read_cursor(conn, "clients")
    assert cursor is not None and cursor.id == "c"
    # Nothing new: nothing published.
    assert run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC) == 0


def test_the_cursor_moves_only_after_the_page_is_published(legacy_dsn: str) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        _add_clients(conn, "a")
    publisher = FakePublisher()
    publisher.fail_with = Unavailable("the broker is down")

    with pytest.raises(Unavailable):
        run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC)
    with psycopg.connect(legacy_dsn, row_factory=psycopg.rows.dict_row) as conn:
        assert read_cursor(conn, "clients") is None

    publisher.fail_with = None
    assert run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC) == 1
    assert _ids_in_pages(legacy_dsn, _requests(publisher)) == {"a"}


def test_what_the_bridge_wrote_is_not_pulled_back_but_soft_deletes_are(legacy_dsn: str) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        _add_clients(conn, "a", "b")
    publisher = FakePublisher()
    run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC)
    publisher.published.clear()

    with psycopg.connect(legacy_dsn) as conn:
        as_meridian(conn)  # the push direction's write
        conn.execute("UPDATE clients SET name = 'A from Meridian' WHERE id = 'a'")
    assert run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC) == 0

    with psycopg.connect(legacy_dsn) as conn:  # the monolith's soft delete
        conn.execute("UPDATE clients SET deleted_at = now() WHERE id = 'b'")
    assert run_pull(_settings(legacy_dsn), publisher, "clients", codec=CODEC) == 1
    assert _ids_in_pages(legacy_dsn, _requests(publisher)) == {"b"}


def test_every_entity_is_pulled_when_none_is_named(legacy_dsn: str) -> None:
    with psycopg.connect(legacy_dsn) as conn:
        _add_clients(conn, "a")
        conn.execute("INSERT INTO drivers (id, name, phone) VALUES ('d', 'D', '+919800000000')")
    publisher = FakePublisher()
    assert run_pull(_settings(legacy_dsn), publisher, codec=CODEC) == 2
    assert sorted(r.entity for r in _requests(publisher)) == ["clients", "drivers"]
