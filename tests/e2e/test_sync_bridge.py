"""The migration bridge end to end (#21, "Must show"): the legacy monolith's PostgreSQL (a real
server, ``tests/legacy_db.py``) beside ``meridian up``'s processes with ``MERIDIAN_LEGACY_DSN``
naming it and the pull every ``PULL_S`` seconds, so each crossing goes the production way: the
scheduled ``sync-pull`` job publishes a ``SyncRequested`` page onto ``sync.requests``, Eventarc's
trigger starts ``workflows/sync.yaml``, whose Cloud Run Jobs run as processes (``meridian job
run``) and report ``SyncStarted``/``SyncEnded``/``SyncError`` onto ``logistics.events``; and back,
the ``legacy-writer`` push reactor writes Meridian's parcel facts into the monolith's tables.

The tests act only as the two systems' users do: SQL on the monolith's tables (as its Java code
would), Meridian's HTTP API, and reads of what each side holds. One shipment of the monolith is
synced once for the module (its crossing timed), each test taking its own parcel of it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.embedded.identity import LocalIdentityIssuer
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from tests.e2e.conftest import eventually
from tests.e2e.test_reactors import Client
from tests.e2e.whole_platform import WholePlatform, document, serve_webhooks, whole_platform

# Every test asks for ``edited``, so the second cycle's edits are made before the first test and
# cross while the first tests act on the other parcels (the module's time is about two cycles).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("edited")]

PULL_S = 2  # MERIDIAN_SYNC_PULL_S: the scheduled pull's period here (a minute in production)
# What the bridge and the effects the tests read need, and nothing more (a 2-core machine).
PROCESSES = (
    "platform",
    "sms-gateway",
    "billing-api",
    "command",
    "event-publisher",
    "billing",
    "notification",
    "client-webhook",
    "legacy-writer",
)
AUDIT = "e2e-sync-audit"  # every event on logistics.events, kept for the tests
REQUESTS = "e2e-sync-requests"  # every SyncRequested on sync.requests
PARCELS_PER_SHIPMENT = 5
DELIVERED_TEXT = re.compile(r"Your parcel (\S+) was delivered")
CODEC = EventCodec(load_catalog())
E = TypeVar("E", bound=ev.DomainEvent)


# The monolith, as its own code uses it: SQL on its tables -----------------------------------------


@pytest.fixture(scope="module")
def monolith_dsn(legacy_postgres: PostgreSQLExecutor) -> Iterator[str]:
    """A fresh legacy database for the module (``legacy_dsn`` is per test; the platform here
    lives for the module)."""
    name = f"legacy_e2e_{os.getpid()}"
    with DatabaseJanitor(
        user="postgres",
        host=legacy_postgres.host,
        port=legacy_postgres.port,
        dbname=name,
        template_dbname=legacy_postgres.template_dbname,
        maintenance_dbname=legacy_postgres.maintenance_dbname,
    ):
        yield (
            f"host={legacy_postgres.host} port={legacy_postgres.port} dbname={name} user=postgres"
        )


def monolith(dsn: str, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run ``query`` on the monolith's database in its own transaction; the rows it returns."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def parcel_row(dsn: str, parcel: str) -> dict[str, Any]:
    (row,) = monolith(dsn, "SELECT * FROM parcels WHERE id = %s", (parcel,))
    return row


def insert_shipment(dsn: str, client_id: str, shipment: str, parcels: Sequence[str]) -> None:
    """A shipment with its parcels as the monolith's order intake writes one: one transaction."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO shipments (id, client_id) VALUES (%s, %s)", (shipment, client_id))
        for i, parcel in enumerate(parcels):
            conn.execute(
                """
                INSERT INTO parcels (id, shipment_id, client_id, recipient_name, recipient_phone,
                                     weight_kg, stop_address, stop_lat, stop_lng, window_start,
                                     window_end)
                VALUES (%s, %s, %s, 'Asha', '+919812345678', 1.5, 'MG Road', %s, 77.59, %s, %s)
                """,
                (parcel, shipment, client_id, 12.97 + i / 100, now, now + timedelta(hours=12)),
            )


# Meridian, as its users see it ------------------------------------------------------------------


@dataclass
class Audit:
    """What went over ``logistics.events`` and ``sync.requests`` since the platform started:
    each event with its message attributes, in the order pulled."""

    broker: Broker
    seen: list[tuple[ev.DomainEvent, dict[str, str]]] = field(default_factory=list)

    def read(self) -> list[tuple[ev.DomainEvent, dict[str, str]]]:
        for subscription in (AUDIT, REQUESTS):
            while batch := self.broker.pull(subscription, 500):
                self.broker.acknowledge(subscription, [m.ack_id for m in batch])
                for m in batch:
                    attributes = dict(m.message.attributes)
                    self.seen.append((CODEC.from_message(m.message.data, attributes), attributes))
        return self.seen

    def of(self, kind: type[E]) -> list[E]:
        return [e for e, _ in self.read() if isinstance(e, kind)]

    def attributes_of(self, event_id: str) -> dict[str, str]:
        (found,) = [a for e, a in self.read() if e.event_id == event_id]
        return found

    def ended(self, request_id: str) -> ev.SyncEnded | ev.SyncError | None:
        """How the sync workflow's run of ``request_id`` ended, once it has."""
        for kind in (ev.SyncEnded, ev.SyncError):
            for event in self.of(kind):
                if event.request_id == request_id:
                    return event
        return None


@dataclass
class Bridge:
    platform: WholePlatform
    dsn: str
    audit: Audit

    def command(self) -> httpx.Client:
        return httpx.Client(base_url=self.platform.url("command"), timeout=30)

    def token(self, subject: str, role: str) -> dict[str, str]:
        issuer = LocalIdentityIssuer(self.platform.data_dir)
        return {"Authorization": f"Bearer {issuer.token(subject, role)}"}

    def parcel(self, parcel: str) -> dict[str, Any] | None:
        return document(self.platform, f"parcels/{parcel}")

    def link(self, parcel: str) -> dict[str, Any] | None:
        return document(self.platform, f"sync_links/parcels~{parcel}")

    def move(self, parcel: str, move: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self.command() as http:
            answer = http.post(f"/v1/parcels/{parcel}:{move}", json=body, headers=headers)
        assert answer.status_code == 202, answer.text


@pytest.fixture(scope="module")
def bridge(monolith_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    env = {
        "MERIDIAN_LEGACY_DSN": monolith_dsn,
        "MERIDIAN_SYNC_PULL_S": str(PULL_S),
        "MERIDIAN_SYNC_READY_TIMEOUT_S": "30",
        "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "MERIDIAN_EVENTARC_MIN_BACKOFF": "0.5",
        "MERIDIAN_EVENTARC_MAX_BACKOFF": "2",
    }
    data_dir = tmp_path_factory.mktemp("sync-bridge") / "data"
    with whole_platform(data_dir, only=PROCESSES, env=env, start_timeout_s=120) as platform:
        broker = Broker(platform.data_dir)
        broker.create_subscription(SubscriptionConfig(name=AUDIT, topic="logistics.events"))
        broker.create_subscription(SubscriptionConfig(name=REQUESTS, topic="sync.requests"))
        yield Bridge(platform, monolith_dsn, Audit(broker))


@dataclass(frozen=True)
class Shipment:
    """The monolith's shipment the module syncs once: its client (registered in Meridian too, as
    a client both systems know), its parcels, and how long the crossing took."""

    client: Client
    shipment_id: str
    parcels: tuple[str, ...]
    committed_at: datetime
    visible_at: datetime  # when every parcel of it was in Meridian
    lag_s: float
    pages: tuple[ev.SyncRequested, ...]  # the pull's pages published meanwhile
    ends: tuple[ev.SyncEnded | ev.SyncError, ...]  # how each page's pipeline run ended


@pytest.fixture(scope="module")
def shipment(bridge: Bridge) -> Shipment:
    client = bridge.platform.client()  # its API key and billing tariff, in Meridian
    monolith(
        bridge.dsn, "INSERT INTO clients (id, name) VALUES (%s, 'Freshmart')", (client.client_id,)
    )
    suffix = os.urandom(3).hex()
    shipment_id = f"s-{suffix}"
    parcels = tuple(f"p-{suffix}-{i}" for i in range(PARCELS_PER_SHIPMENT))
    started = time.monotonic()
    committed_at = datetime.now(UTC)
    insert_shipment(bridge.dsn, client.client_id, shipment_id, parcels)
    eventually(
        lambda: all(bridge.parcel(p) for p in parcels),
        timeout_s=PULL_S + 60,
        what="the monolith's shipment in Meridian",
    )
    lag_s = time.monotonic() - started
    visible_at = datetime.now(UTC)
    # The pages that carried it, and how their pipeline runs ended (waited for, so the later
    # tests' edits come after this cycle's reconciliation).
    pages = [
        r
        for r in bridge.audit.of(ev.SyncRequested)
        if r.entity in ("shipments", "parcels") and committed_at <= r.occurred_at <= visible_at
    ]
    ends = [eventually(lambda r=r: bridge.audit.ended(r.request_id), 90) for r in pages]
    return Shipment(
        client, shipment_id, parcels, committed_at, visible_at, lag_s, tuple(pages), tuple(ends)
    )


@dataclass(frozen=True)
class Edited:
    """What ``edited`` changed on both sides, right after the first crossing: the edits the later
    tests follow, made together so that one pipeline cycle carries them all while the first
    tests act on the other parcels."""

    conflicted: str  # assigned in Meridian, then sent out and renamed in the monolith
    conflicted_version: int  # the monolith's row version after its edit
    sent_out_in_monolith: str  # sent out by the monolith alone
    sent_out_version: int
    tampered: str  # changed in the monolith with its trigger off, then asked for on demand
    request_id: str  # the operator's on-demand sync of the tampered parcel


@pytest.fixture(scope="module")
def edited(bridge: Bridge, shipment: Shipment) -> Edited:
    conflicted, sent_out, tampered = shipment.parcels[2:5]
    # Meridian assigns a parcel; before the next pull the monolith sends the same parcel out with
    # its own driver (one move further along the state machine) and corrects the recipient's name.
    assign = {
        "route_id": f"r-{conflicted}",
        "driver_id": "drv-meridian",
        "vehicle_id": "veh-3",
        "stop_sequence": 0,
    }
    bridge.move(conflicted, "assign", assign, shipment.client.dispatcher)
    monolith(
        bridge.dsn,
        "UPDATE parcels SET status = 'OUT_FOR_DELIVERY', driver_id = 'drv-legacy',"
        " vehicle_id = 'veh-9', attempts = 1, recipient_name = 'Asha Kumar' WHERE id = %s",
        (conflicted,),
    )
    # The monolith alone sends another parcel out.
    monolith(
        bridge.dsn,
        "UPDATE parcels SET status = 'OUT_FOR_DELIVERY', driver_id = 'drv-legacy',"
        " vehicle_id = 'veh-9', attempts = 1 WHERE id = %s",
        (sent_out,),
    )
    # A third is changed behind the monolith's own trigger (a manual fix in psql with triggers
    # off): no new version, no new updated_at, so no pull will ever carry it; only
    # reconciliation sees it. An operator asks for that parcel's sync.
    with psycopg.connect(bridge.dsn) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "UPDATE parcels SET recipient_phone = '+919800000000' WHERE id = %s", (tampered,)
        )
    with bridge.command() as http:
        asked = http.post(
            "/v1/sync-requests",
            json={"entity": "parcels", "ids": [tampered]},
            headers=bridge.token("op-1", "operator"),
        )
    assert asked.status_code == 202, asked.text
    return Edited(
        conflicted,
        parcel_row(bridge.dsn, conflicted)["version"],
        sent_out,
        parcel_row(bridge.dsn, sent_out)["version"],
        tampered,
        asked.json()["request_id"],
    )


# Monolith -> Meridian ---------------------------------------------------------------------------


def test_a_monolith_shipment_appears_within_one_cycle_and_flows_through_the_reactors(
    bridge: Bridge, shipment: Shipment
) -> None:
    parcel = shipment.parcels[0]
    arrived = bridge.parcel(parcel)
    assert arrived is not None
    assert arrived["status"] == "CREATED"
    assert arrived["client_id"] == shipment.client.client_id
    assert arrived["_last_command"]["name"] == "SyncFromMonolith"
    held = document(bridge.platform, f"shipments/{shipment.shipment_id}")
    assert held is not None and held["parcel_ids"] == list(shipment.parcels)
    assert bridge.link(parcel)["legacy_version"] == 1  # type: ignore[index]

    # One cycle: the first pull after the commit published the page that carried the rows (each
    # entity once: nothing more to pull afterwards), and the rows were in Meridian no later than
    # the end of that page's pipeline run.
    pages, ends = shipment.pages, shipment.ends
    assert sorted(r.entity for r in pages) == ["parcels", "shipments"], pages
    assert all(r.origin == ev.SyncOrigin.SCHEDULED for r in pages)
    first = min(r.occurred_at for r in pages)
    assert (first - shipment.committed_at).total_seconds() < PULL_S + 15  # the next pull's run
    assert all(isinstance(e, ev.SyncEnded) for e in ends), ends
    assert (
        shipment.lag_s
        <= max((e.occurred_at - shipment.committed_at).total_seconds() for e in ends) + 1
    ), "not visible by the end of the pipeline runs of the pages that carried it"
    print(f"monolith commit -> visible in Meridian: {shipment.lag_s:.1f} s (pull every {PULL_S} s)")

    # Its parcel flows through Meridian's reactors like one created through Meridian's API.
    client, driver = shipment.client, f"drv-{os.urandom(3).hex()}"
    with serve_webhooks(bridge.platform, client) as hooks:
        assign = {
            "route_id": f"r-{parcel}",
            "driver_id": driver,
            "vehicle_id": "veh-3",
            "stop_sequence": 0,
        }
        bridge.move(parcel, "assign", assign, client.dispatcher)
        driver_app = bridge.token(driver, "driver")
        out = {"vehicle_id": "veh-3", "at": datetime.now(UTC).isoformat()}
        bridge.move(parcel, "out-for-delivery", out, driver_app)
        delivered = {
            "vehicle_id": "veh-3",
            "delivered_at": datetime.now(UTC).isoformat(),
            "position": {"lat": 12.97, "lng": 77.59},
            "pod": {"signature_ref": f"sig-{parcel}"},
        }
        bridge.move(parcel, "deliver", delivered, driver_app)
        billing = bridge.platform.url("billing-api")
        charges = eventually(
            lambda: [
                c for c in httpx.get(f"{billing}/v1/charges").json() if c["reference"] == parcel
            ],
            what="billing's charge",
        )
        sms = bridge.platform.url("sms-gateway")
        texts = eventually(
            lambda: [
                m["body"]
                for m in httpx.get(f"{sms}/v1/messages").json()
                if (found := DELIVERED_TEXT.match(m["body"])) and found[1] == parcel
            ],
            what="the 'delivered' text",
        )
        webhooks = eventually(
            lambda: [h for h in hooks if h[1] == "ParcelDelivered" and h[2] == parcel],
            what="the client's webhook",
        )
    assert len(charges) == 1 and charges[0]["client_id"] == client.client_id
    assert len(texts) == 1
    assert len(webhooks) == 1


def _carries(request: ev.SyncRequested, row: dict[str, Any]) -> bool:
    """Whether a sync request names ``row`` (a parcel): by id, or within its page's keyset."""
    if request.entity != "parcels":
        return False
    if request.ids:
        return row["id"] in request.ids
    key = (row["updated_at"], row["id"])
    after = request.after_updated_at is None or key > (
        request.after_updated_at,
        request.after_id or "",
    )
    through = request.through_updated_at is None or key <= (
        request.through_updated_at,
        request.through_id or "",
    )
    return after and through


# Meridian -> monolith ---------------------------------------------------------------------------


def test_a_delivery_in_meridian_appears_in_the_monolith_and_is_not_pulled_back(
    bridge: Bridge, shipment: Shipment
) -> None:
    parcel, driver = shipment.parcels[1], f"drv-{os.urandom(3).hex()}"
    driver_app = bridge.token(driver, "driver")
    assign = {
        "route_id": f"r-{parcel}",
        "driver_id": driver,
        "vehicle_id": "veh-3",
        "stop_sequence": 0,
    }
    bridge.move(parcel, "assign", assign, shipment.client.dispatcher)
    bridge.move(
        parcel,
        "out-for-delivery",
        {"vehicle_id": "veh-3", "at": datetime.now(UTC).isoformat()},
        driver_app,
    )
    delivered_at = datetime.now(UTC).replace(microsecond=0)
    delivered = {
        "vehicle_id": "veh-3",
        "delivered_at": delivered_at.isoformat(),
        "position": {"lat": 12.975, "lng": 77.595},
        "pod": {"signature_ref": f"sig-{parcel}"},
    }
    bridge.move(parcel, "deliver", delivered, driver_app)

    row = eventually(
        lambda: (r := parcel_row(bridge.dsn, parcel))["status"] == "DELIVERED" and r,
        timeout_s=30,
        what="the delivery in the monolith's parcels table",
    )
    assert row["written_by"] == "meridian"  # the bridge's write, which the pull never reads
    assert row["driver_id"] == driver and row["vehicle_id"] == "veh-3"
    assert row["delivered_at"] == delivered_at
    assert (float(row["delivered_lat"]), float(row["delivered_lng"])) == (12.975, 77.595)
    processed = monolith(
        bridge.dsn,
        "SELECT event_type FROM bridge_processed_events WHERE subject = %s ORDER BY occurred_at",
        (parcel,),
    )
    assert [p["event_type"] for p in processed][-1] == "ParcelDelivered"

    # Nothing echoes back: pulls come and go, and none carries the row the writer wrote.
    time.sleep(3 * PULL_S + 2)
    assert parcel_row(bridge.dsn, parcel)["version"] == row["version"]
    carried = [r for r in bridge.audit.of(ev.SyncRequested) if _carries(r, row)]
    assert carried == []
    assert bridge.link(parcel)["legacy_version"] == 1  # type: ignore[index]  # never re-applied
    assert bridge.parcel(parcel)["_last_command"]["name"] != "SyncFromMonolith"  # type: ignore[index]


def test_a_monolith_change_the_sync_applied_is_not_written_back(
    bridge: Bridge, edited: Edited
) -> None:
    parcel = edited.sent_out_in_monolith
    applied = eventually(
        lambda: (d := bridge.parcel(parcel)) and d["status"] == "OUT_FOR_DELIVERY" and d,
        timeout_s=PULL_S + 60,
        what="the monolith's send-out in Meridian",
    )
    assert (applied["driver_id"], applied["vehicle_id"]) == ("drv-legacy", "veh-9")
    assert applied["_last_command"]["name"] == "SyncFromMonolith"
    # Meridian announces the move like any other (its reactors hear of it), marked as the
    # monolith's, so the legacy writer's subscription does not take it.
    (sent,) = eventually(
        lambda: [e for e in bridge.audit.of(ev.ParcelOutForDelivery) if e.parcel_id == parcel],
        what="ParcelOutForDelivery",
    )
    assert bridge.audit.attributes_of(sent.event_id).get("origin") == "monolith"
    time.sleep(3)  # what the writer would do with it, it would have done by now
    row = parcel_row(bridge.dsn, parcel)
    assert (row["version"], row["written_by"]) == (edited.sent_out_version, "monolith")
    processed = "SELECT 1 FROM bridge_processed_events WHERE subject = %s"
    assert monolith(bridge.dsn, processed, (parcel,)) == []


# Both sides in one cycle ------------------------------------------------------------------------


def test_edits_on_both_sides_in_one_cycle_converge_by_the_rules(
    bridge: Bridge, edited: Edited
) -> None:
    parcel = edited.conflicted
    converged = eventually(
        lambda: (d := bridge.parcel(parcel)) and d["status"] == "OUT_FOR_DELIVERY" and d,
        timeout_s=PULL_S + 60,
        what="the monolith's status in Meridian",
    )
    # The status by the state machine (OUT_FOR_DELIVERY is one move past ASSIGNED), with what
    # goes with it; the name, which only the monolith changed, is the monolith's.
    assert (converged["driver_id"], converged["vehicle_id"], converged["attempts"]) == (
        "drv-legacy",
        "veh-9",
        1,
    )
    assert converged["recipient"]["name"] == "Asha Kumar"
    # The monolith's row stands as it wrote it: the writer's ParcelAssigned lost to it.
    row = parcel_row(bridge.dsn, parcel)
    assert (row["status"], row["driver_id"], row["vehicle_id"], row["recipient_name"]) == (
        "OUT_FOR_DELIVERY",
        "drv-legacy",
        "veh-9",
        "Asha Kumar",
    )
    assert (row["version"], row["written_by"]) == (edited.conflicted_version, "monolith")

    conflict = document(bridge.platform, f"sync_conflicts/parcels~{parcel}~{row['version']}")
    assert conflict is not None, "the conflict is recorded"
    decisions = {d["field"]: (d["winner"], d["rule"]) for d in conflict["decisions"]}
    # the fields both sides changed apart: the status, and what goes with it, by the state
    # machine; the name only the monolith changed is taken, which is no conflict
    assert decisions == {
        "status": ("monolith", "state-machine"),
        "driver_id": ("monolith", "state-machine"),
        "vehicle_id": ("monolith", "state-machine"),
        "attempts": ("monolith", "state-machine"),
    }
    assert (conflict["meridian"]["status"], conflict["meridian"]["driver_id"]) == (
        "ASSIGNED",
        "drv-meridian",
    )
    assert (conflict["monolith"]["status"], conflict["monolith"]["driver_id"]) == (
        "OUT_FOR_DELIVERY",
        "drv-legacy",
    )


# Reconciliation ---------------------------------------------------------------------------------


def test_a_row_tampered_with_after_sync_ends_the_workflow_in_sync_error(
    bridge: Bridge, edited: Edited
) -> None:
    ended = eventually(
        lambda: bridge.audit.ended(edited.request_id), 90, what="the on-demand run's end"
    )
    assert isinstance(ended, ev.SyncError), ended
    assert ended.step == "sync-reconcile"
    assert "non-zero status of 1" in ended.reason, ended.reason
    # reconciliation's report, saved under the request's id, names the row and the field
    report = document(bridge.platform, f"sync_reconciliations/{edited.request_id}")
    assert report is not None and report["ok"] is False
    (difference,) = report["differences"]
    assert (difference["entity"], difference["id"], difference["kind"]) == (
        "parcels",
        edited.tampered,
        "fields_differ",
    )
    assert [(f["field"], f["monolith"], f["meridian"]) for f in difference["fields"]] == [
        ("recipient_phone", "+919800000000", "+919812345678")
    ]
    # The SyncError is reported by the step before the workflow raises: the execution fails just
    # after it is archived.
    execution_url = f"{bridge.platform.url('platform')}/v1/executions/{ended.execution_id}"
    states: list[str] = []

    def failed() -> bool:
        states.append(httpx.get(execution_url).json()["state"])
        return states[-1] != "ACTIVE"

    eventually(failed, 30, what="the execution's end")
    assert states[-1] == "FAILED", states[-1]
    # the sync itself left the parcel alone: the row's version is the one it applied
    tampered = bridge.parcel(edited.tampered)
    assert tampered is not None and tampered["recipient"]["phone"] == "+919812345678"
