"""Reconciliation's rules on the fake store: pages cover a day's parcels exactly once (ties on the
window end across pages included), and each source's disagreement names the parcel."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from meridian.app.reconcile import Difference, parcel_pages, reconcile_day
from meridian.app.webhooks import DELIVERIES, ENDPOINTS
from tests.fakes import FakeDocumentStore

DAY = date(2026, 11, 21)
END = datetime(2026, 11, 21, 12, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 2, tzinfo=UTC)


def _parcel(
    store: FakeDocumentStore, pid: str, status: str = "DELIVERED", **extra: Any
) -> dict[str, Any]:
    data = {
        "parcel_id": pid,
        "client_id": "c-1",
        "status": status,
        "stop": {"window": {"start": END - timedelta(hours=3), "end": extra.pop("end", END)}},
        "delivered_at": END - timedelta(minutes=5) if status == "DELIVERED" else None,
        "updated_at": extra.pop("updated_at", END),
        **extra,
    }
    store.set(f"parcels/{pid}", data)
    return data


def _consistent(store: FakeDocumentStore, pid: str, late: bool = False) -> None:
    _parcel(store, pid, delivered_at=END + timedelta(minutes=1) if late else END)
    store.set(f"parcel_status/{pid}", {"parcel_id": pid, "sla": "breached" if late else "met"})
    store.set(
        f"billing_ledger/evt-{pid}",
        {"event_id": f"evt-{pid}", "event_type": "ParcelDelivered", "reference": pid},
    )
    store.set(f"{DELIVERIES}/wh-1:evt-{pid}", {"event_id": f"evt-{pid}", "status": "delivered"})


def _endpoint(store: FakeDocumentStore) -> None:
    store.set(
        f"{ENDPOINTS}/wh-1",
        {
            "client_id": "c-1",
            "status": "active",
            "event_types": ["ParcelDelivered"],
            "created_at": END - timedelta(days=1),
        },
    )


def test_pages_cover_the_day_once_with_ties_across_pages() -> None:
    store = FakeDocumentStore()
    for i in range(7):
        _parcel(store, f"p-{i}", status="CREATED")  # all on one window end: ties across pages
    _parcel(store, "p-later", status="CREATED", end=END + timedelta(hours=5))
    _parcel(store, "p-next-day", status="CREATED", end=END + timedelta(days=1))
    _parcel(store, "p-day-before", status="CREATED", end=END - timedelta(days=1))
    pages = list(parcel_pages(store, DAY, page_size=3))
    seen = [d.id for page in pages for d in page]
    assert seen == [*(f"p-{i}" for i in range(7)), "p-later"]
    assert all(len(page) <= 3 for page in pages)


def test_a_consistent_day_has_no_differences() -> None:
    store = FakeDocumentStore()
    _endpoint(store)
    for i in range(5):
        _consistent(store, f"p-{i}", late=i == 3)
    _parcel(store, "p-waiting", status="OUT_FOR_DELIVERY")
    assert list(reconcile_day(store, DAY, NOW, page_size=2)) == []


def test_each_source_that_disagrees_names_the_parcel() -> None:
    store = FakeDocumentStore()
    _endpoint(store)
    for pid in ("p-ok", "p-unbilled", "p-no-view", "p-wrong-view", "p-no-hook"):
        _consistent(store, pid)
    store.delete("billing_ledger/evt-p-unbilled")
    store.delete("parcel_status/p-no-view")
    store.set("parcel_status/p-wrong-view", {"sla": "breached"})
    store.delete(f"{DELIVERIES}/wh-1:evt-p-no-hook")
    _parcel(store, "p-charged", status="DELIVERY_FAILED")
    store.set(
        "billing_ledger/evt-x",
        {"event_id": "evt-x", "event_type": "ParcelDelivered", "reference": "p-charged"},
    )
    found = set(reconcile_day(store, DAY, NOW, page_size=2))
    assert found == {
        Difference("p-unbilled", "billing", "delivered but not charged"),
        # Without billing's record of the event, the webhook check derives the event id and
        # finds no delivery under it.
        Difference("p-unbilled", "webhooks", "no delivery to endpoint wh-1"),
        Difference("p-no-view", "parcel_status", "no status view for a delivered parcel"),
        Difference("p-wrong-view", "parcel_status", "sla 'breached', delivery says 'met'"),
        Difference("p-no-hook", "webhooks", "no delivery to endpoint wh-1"),
        Difference("p-charged", "billing", "charged but DELIVERY_FAILED"),
    }


def test_parcels_changed_within_the_in_flight_window_are_left_out() -> None:
    store = FakeDocumentStore()
    _parcel(store, "p-just-now", updated_at=NOW - timedelta(seconds=30))
    _parcel(store, "p-settled", updated_at=NOW - timedelta(minutes=3))
    assert {d.parcel_id for d in reconcile_day(store, DAY, NOW)} == {"p-settled"}
