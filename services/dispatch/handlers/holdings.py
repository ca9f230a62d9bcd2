"""What a dispatch window holds, read and given back: the reads and moves several steps share.

A window holds its planned parcels, and the drivers and vehicles reserved for it (``window_id`` on
their documents, ``route_id`` once a route uses them). Giving them back is idempotent: a retry
finds them given back and reports the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meridian.app import dispatch_records as rec
from meridian.app.records import parcel_document, parcel_from_document
from meridian.domain.errors import NotFound
from meridian.domain.model import DriverStatus, ParcelStatus, VehicleStatus
from meridian.ports import DocumentStore, Query, Transaction
from services.dispatch.handlers import CHUNK, SAGA, Deps


def window(store: DocumentStore, window_id: str) -> dict[str, Any]:
    doc = store.get(rec.window_path(window_id))
    if doc is None:
        raise NotFound(f"no dispatch window {window_id}")
    return dict(doc.data)


def progress(deps: Deps, window_id: str, **fields: Any) -> None:
    """Note on the window how far the saga got, for the dispatch desk."""
    deps.store.update(
        rec.window_path(window_id),
        {**{f"progress.{k}": v for k, v in fields.items()}, "updated_at": deps.clock()},
    )


def held(store: DocumentStore, collection: str, window_id: str) -> list[dict[str, Any]]:
    """The drivers or vehicles (``collection``) this window holds."""
    return [
        dict(d.data) for d in store.query(Query(collection).where("window_id", "==", window_id))
    ]


def planned(store: DocumentStore, window_id: str) -> list[dict[str, Any]]:
    """The parcels planned into this window and not yet assigned."""
    return [
        dict(d.data)
        for d in store.query(Query(rec.PARCELS).where("window_id", "==", window_id))
        if d.data["status"] == ParcelStatus.PLANNED.value
    ]


def chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def requeue_parcels(
    deps: Deps, window_id: str, parcel_ids: Sequence[str], reason: str
) -> list[str]:
    """Give planned or assigned parcels of this window back to CREATED; returns those moved now
    or by an earlier run (so a retry reports the same list)."""
    now = deps.clock()
    moved: list[str] = []
    for chunk in chunks(sorted(parcel_ids)):

        def work(tx: Transaction, chunk: Sequence[str] = chunk) -> list[str]:
            done = []
            docs = [(pid, tx.get(f"{rec.PARCELS}/{pid}")) for pid in chunk]  # reads before writes
            for parcel_id, doc in docs:
                if doc is None:
                    continue
                parcel = parcel_from_document(doc.data)
                if parcel.window_id == window_id and parcel.status in (
                    ParcelStatus.PLANNED,
                    ParcelStatus.ASSIGNED,
                ):
                    document = parcel_document(parcel.requeue(), now, "RequeueParcel", SAGA)
                    document.update(requeued_from=window_id, requeue_reason=reason)
                    tx.set(f"{rec.PARCELS}/{parcel_id}", document)
                    done.append(parcel_id)
                elif (
                    parcel.status == ParcelStatus.CREATED
                    and doc.data.get("requeued_from") == window_id
                ):
                    done.append(parcel_id)
            return done

        moved += deps.store.run_transaction(work)

    def note(tx: Transaction) -> None:
        window = tx.get(rec.window_path(window_id))
        if window is not None:
            requeued = sorted(set(window.data.get("requeued", [])) | set(moved))
            tx.update(rec.window_path(window_id), {"requeued": requeued, "updated_at": now})

    deps.store.run_transaction(note)
    return moved


def free(
    deps: Deps, collection: str, ids: Sequence[str], window_id: str, route: str | None
) -> None:
    """Put drivers or vehicles held by this window (and route, if given) back in the pool."""
    available = DriverStatus.AVAILABLE if collection == rec.DRIVERS else VehicleStatus.AVAILABLE

    def work(tx: Transaction) -> None:
        docs = [(item, tx.get(f"{collection}/{item}")) for item in ids]  # reads before writes
        for item, doc in docs:
            if doc is None or doc.data.get("window_id") != window_id:
                continue
            if route is not None and doc.data.get("route_id") not in (route, None):
                continue
            tx.update(
                f"{collection}/{item}",
                {"status": available.value, "window_id": None, "route_id": None},
            )

    deps.store.run_transaction(work)
