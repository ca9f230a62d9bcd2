"""Platform reconciliation: for one day, do the store, the read models, billing, the client
webhooks and the event archive agree about every delivered parcel?

The parcels whose delivery window ends on the day are read in pages (keyset pagination on the
window's end, then the parcel id: ``Query.limit`` with a cursor, never a whole collection in
memory). For each page, each source is read once for the page (batched point reads, ``in``
queries of at most ``IN_LIMIT`` values, one warehouse query), and every delivered parcel must
have: a ``parcel_status`` view saying its window was met or breached as its delivery time says
(the ETA reactor), exactly one billing ledger entry for its delivery (the billing reactor), a
delivery record for each active endpoint of its client that wants ``ParcelDelivered`` and
existed before the delivery (the client-webhook reactor), and, when an archive table is given,
its ``ParcelDelivered`` archived. A parcel not delivered must not be billed. A parcel changed
within the in-flight window (``IN_FLIGHT``, two minutes by default) is skipped: its events may
still be on their way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from meridian.app.webhooks import DELIVERIES, ENDPOINTS
from meridian.domain.errors import NotFound
from meridian.domain.events import derive_event_id
from meridian.domain.states import ParcelStatus
from meridian.ports import Document, DocumentStore, Query, Warehouse

PARCELS = "parcels"
STATUS = "parcel_status"  # the ETA reactor's read model (services/reactors/eta)
LEDGER = "billing_ledger"  # the billing reactor's records (services/reactors/billing)
WINDOW_END = "stop.window.end"
IN_FLIGHT = timedelta(minutes=2)
PAGE = 200
IN_LIMIT = 30  # Firestore's largest ``in`` filter


@dataclass(frozen=True)
class Difference:
    """One disagreement: which parcel, which source disagrees, and how."""

    parcel_id: str
    source: str  # parcel_status, billing, webhooks or archive
    what: str


def reconcile_day(
    store: DocumentStore,
    day: date,
    now: datetime,
    warehouse: Warehouse | None = None,
    archive_table: str | None = None,
    in_flight: timedelta = IN_FLIGHT,
    page_size: int = PAGE,
) -> Iterator[Difference]:
    """The differences of ``day``'s parcels (those whose delivery window ends that UTC day),
    page by page; parcels changed after ``now - in_flight`` are left for a later run."""
    settled_before = now - in_flight
    for page in parcel_pages(store, day, page_size):
        settled = [p for p in page if _updated(p) <= settled_before]
        if settled:
            yield from _check_page(store, settled, warehouse, archive_table, day)


def parcel_pages(store: DocumentStore, day: date, page_size: int) -> Iterator[list[Document]]:
    """The parcels whose window ends on ``day``, ``page_size`` at a time, ordered by window end
    then id. A cursor is the last (end, id) seen: the parcels of the same end after that id, then
    those of a later end (the port has no ``start_after``; two queries express it)."""
    start = datetime.combine(day, time(), UTC)
    end = start + timedelta(days=1)
    day_query = Query(PARCELS).where(WINDOW_END, ">=", start).where(WINDOW_END, "<", end)
    page = store.query(day_query.order_by(WINDOW_END).order_by("parcel_id").limit(page_size))
    while page:
        yield page
        last_end, last_id = page[-1].data["stop"]["window"]["end"], page[-1].id
        page = store.query(
            Query(PARCELS)
            .where(WINDOW_END, "==", last_end)
            .where("parcel_id", ">", last_id)
            .order_by("parcel_id")
            .limit(page_size)
        )
        if len(page) < page_size:
            page += store.query(
                Query(PARCELS)
                .where(WINDOW_END, ">", last_end)
                .where(WINDOW_END, "<", end)
                .order_by(WINDOW_END)
                .order_by("parcel_id")
                .limit(page_size - len(page))
            )


def _updated(parcel: Document) -> datetime:
    updated = parcel.data.get("updated_at")
    return updated if isinstance(updated, datetime) else parcel.update_time


def _delivered(parcel: Document) -> bool:
    return bool(parcel.data.get("status") == ParcelStatus.DELIVERED)


def _check_page(
    store: DocumentStore,
    parcels: Sequence[Document],
    warehouse: Warehouse | None,
    archive_table: str | None,
    day: date,
) -> Iterator[Difference]:
    ids = [p.id for p in parcels]
    views = store.get_all([f"{STATUS}/{i}" for i in ids])
    charges: dict[str, list[Mapping[str, Any]]] = {i: [] for i in ids}
    for chunk in _chunks(ids, IN_LIMIT):
        for entry in store.query(Query(LEDGER).where("reference", "in", chunk)):
            if entry.data.get("event_type") == "ParcelDelivered":
                charges[entry.data["reference"]].append(entry.data)
    delivered_events: dict[str, tuple[str, datetime]] = {}
    for parcel in parcels:
        pid = parcel.id
        billed = charges[pid]
        if not _delivered(parcel):
            if billed:
                yield Difference(pid, "billing", f"charged but {parcel.data.get('status')}")
            continue
        delivered_at = parcel.data["delivered_at"]
        window_end = parcel.data["stop"]["window"]["end"]
        expected = "met" if delivered_at <= window_end else "breached"
        view = views[f"{STATUS}/{pid}"]
        if view is None:
            yield Difference(pid, "parcel_status", "no status view for a delivered parcel")
        elif view.data.get("sla") != expected:
            yield Difference(
                pid, "parcel_status", f"sla {view.data.get('sla')!r}, delivery says {expected!r}"
            )
        if not billed:
            yield Difference(pid, "billing", "delivered but not charged")
        elif len(billed) > 1:
            yield Difference(pid, "billing", f"delivery charged {len(billed)} times")
        # The delivery's event id: billing recorded it; else the event publisher's derivation
        # from the delivering change (true while nothing changed the parcel since).
        event_id = (
            billed[0]["event_id"]
            if billed
            else derive_event_id(parcel.path, parcel.update_time.isoformat(), "DELIVERED")
        )
        delivered_events[pid] = (event_id, delivered_at)
    if delivered_events:
        clients = {p.id: p.data["client_id"] for p in parcels if p.id in delivered_events}
        yield from _check_webhooks(store, delivered_events, clients)
        if warehouse is not None and archive_table is not None:
            yield from _check_archive(warehouse, archive_table, delivered_events, day)


def _check_webhooks(
    store: DocumentStore,
    delivered: Mapping[str, tuple[str, datetime]],
    clients: Mapping[str, str],
) -> Iterator[Difference]:
    endpoints: dict[str, list[Document]] = {}
    for chunk in _chunks(sorted(set(clients.values())), IN_LIMIT):
        for endpoint in store.query(Query(ENDPOINTS).where("client_id", "in", chunk)):
            endpoints.setdefault(endpoint.data["client_id"], []).append(endpoint)
    expected: dict[str, str] = {}  # delivery path -> parcel
    for pid, (event_id, delivered_at) in delivered.items():
        for endpoint in endpoints.get(clients[pid], []):
            wanted = endpoint.data.get("event_types") or []
            if (
                endpoint.data.get("status") == "active"
                and (not wanted or "ParcelDelivered" in wanted)
                and endpoint.data["created_at"] <= delivered_at
            ):
                expected[f"{DELIVERIES}/{endpoint.id}:{event_id}"] = pid
    found = store.get_all(list(expected))
    for path, pid in expected.items():
        if found[path] is None:
            webhook_id = path.split("/", 1)[1].split(":", 1)[0]
            yield Difference(pid, "webhooks", f"no delivery to endpoint {webhook_id}")


def _check_archive(
    warehouse: Warehouse,
    table: str,
    delivered: Mapping[str, tuple[str, datetime]],
    day: date,
) -> Iterator[Difference]:
    """Each delivery's event among the archive's rows, found by its id in the ``attributes``
    column (``Warehouse.json_text``: the same query on BigQuery, where the column is JSON, and
    on DuckDB, where it is JSON text)."""
    start = datetime.combine(day, time(), UTC) - timedelta(days=1)
    # Not $start/$end: END is a GoogleSQL reserved keyword, refused as a parameter name.
    parameters: dict[str, Any] = {"since": start, "before": start + timedelta(days=3)}
    wanted = []
    for n, (event_id, _) in enumerate(delivered.values()):
        parameters[f"e{n}"] = event_id
        wanted.append(f"$e{n}")
    event_id_sql = warehouse.json_text("attributes", "eventId")
    sql = (
        f"SELECT {event_id_sql} AS event_id FROM {table}"
        f" WHERE publish_time >= $since AND publish_time < $before"
        f" AND {event_id_sql} IN ({', '.join(wanted)})"
    )
    try:
        rows = warehouse.query(sql, parameters)
    except NotFound:
        return  # no archive (yet): nothing to compare with
    archived = {r["event_id"] for r in rows}
    for pid, (event_id, _) in delivered.items():
        if event_id not in archived:
            yield Difference(pid, "archive", f"ParcelDelivered {event_id} not archived")


def _chunks(values: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(values), size):
        yield list(values[i : i + size])
