"""What the bridge syncs: per entity, the monolith's table, the Meridian collection, the synced
fields and the mapping both ways (row <-> document), and a checksum of the synced fields that
both sides compute identically (``row_checksum`` of a row equals ``document_checksum`` of the
document it maps to; the reconcile job compares them).

Echo suppression, both ways (S3's push direction relies on these markers):

- **Into PostgreSQL.** A row's ``written_by`` says who made its latest change: the schema's
  trigger sets it from the session setting ``meridian.origin``, which only the bridge's push sets
  (``services.sync.legacy.as_meridian``); the pull reads only ``written_by = 'monolith'`` rows
  (``MONOLITH``), so what the push wrote never comes back.
- **Into Meridian.** What the bridge writes into a document carries ``_last_command.name ==
  SYNC_COMMAND`` (by the job, role ``sync``) and ``_sync`` (the row's ``version`` and
  ``updated_at``); and per synced row, ``sync_links/{entity}~{id}`` remembers the row version and
  the document's ``updated_at`` the bridge last wrote. A document whose ``updated_at`` still
  equals its link's ``meridian_updated_at`` has not changed in Meridian since: the push must not
  send it back (and whatever it would write, the row already says: the push is a no-op on
  equal values).

The link also keeps the **base** of the three-way merge (``services.sync.conflicts.merge``): per
synced field of the document, a digest (``field_digests``) of the value each side held after the
bridge's last write, the monolith's row and Meridian's document apart (they may differ where
Meridian won a field the push does not carry back), so a later sync tells which side changed a
field since.

Soft deletes: the monolith stamps ``deleted_at``; it is a synced field like any other (the
document keeps it), not a tombstone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

Row = Mapping[str, Any]
Document = Mapping[str, Any]

MONOLITH = "monolith"  # written_by of the monolith's own changes: the only ones the pull reads
MERIDIAN = "meridian"  # written_by of the push direction's changes (meridian.origin)
SYNC_COMMAND = "SyncFromMonolith"  # _last_command.name of what the bridge writes into Meridian
SYNC_ROLE = "sync"
LINKS = "sync_links"  # per synced row: the row version and document write the bridge last made


@dataclass(frozen=True)
class Entity:
    """One kind of record both systems hold. ``columns`` are the synced columns (``id`` first,
    ``deleted_at`` last), in the order the checksum reads them; ``job`` applies it."""

    name: str
    table: str
    collection: str
    id_field: str
    columns: tuple[str, ...]
    job: str
    to_document: Callable[[Row], dict[str, Any]]
    to_row: Callable[[Document], dict[str, Any]]

    def path(self, row_id: str) -> str:
        return f"{self.collection}/{row_id}"

    def link_path(self, row_id: str) -> str:
        return f"{LINKS}/{self.name}~{row_id}"


def _point(lat: Any, lng: Any) -> dict[str, float] | None:
    return None if lat is None else {"lat": float(lat), "lng": float(lng)}


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# Clients ----------------------------------------------------------------------------------------


def _client_document(row: Row) -> dict[str, Any]:
    return {
        "client_id": row["id"],
        "name": row["name"],
        "email": row["email"],
        "deleted_at": row["deleted_at"],
    }


def _client_row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc["client_id"],
        "name": doc["name"],
        "email": doc.get("email"),
        "deleted_at": doc.get("deleted_at"),
    }


# Drivers and vehicles ---------------------------------------------------------------------------


def _driver_document(row: Row) -> dict[str, Any]:
    return {
        "driver_id": row["id"],
        "name": row["name"],
        "phone": row["phone"],
        "status": row["status"],
        "deleted_at": row["deleted_at"],
    }


def _driver_row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc["driver_id"],
        "name": doc["name"],
        "phone": doc["phone"],
        "status": doc["status"],
        "deleted_at": doc.get("deleted_at"),
    }


def _vehicle_document(row: Row) -> dict[str, Any]:
    return {
        "vehicle_id": row["id"],
        "capacity_kg": float(row["capacity_kg"]),
        "capacity_parcels": int(row["capacity_parcels"]),
        "depot": _point(row["depot_lat"], row["depot_lng"]),
        "status": row["status"],
        "deleted_at": row["deleted_at"],
    }


def _vehicle_row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc["vehicle_id"],
        "capacity_kg": doc["capacity_kg"],
        "capacity_parcels": doc["capacity_parcels"],
        "depot_lat": doc["depot"]["lat"],
        "depot_lng": doc["depot"]["lng"],
        "status": doc["status"],
        "deleted_at": doc.get("deleted_at"),
    }


# Shipments and parcels --------------------------------------------------------------------------


def _shipment_document(row: Row) -> dict[str, Any]:
    """The shipment's own fields; its ``parcel_ids`` and ``status`` are Meridian's (apply)."""
    return {
        "shipment_id": row["id"],
        "client_id": row["client_id"],
        "created_at": row["created_at"],
        "deleted_at": row["deleted_at"],
    }


def _shipment_row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc["shipment_id"],
        "client_id": doc["client_id"],
        "created_at": doc["created_at"],
        "deleted_at": doc.get("deleted_at"),
    }


def _parcel_document(row: Row) -> dict[str, Any]:
    """A parcel as ``meridian.domain.model.Parcel`` dumps it (what the command path writes and
    the event publisher reads), plus the monolith's ``deleted_at``."""
    return {
        "parcel_id": row["id"],
        "shipment_id": row["shipment_id"],
        "client_id": row["client_id"],
        "recipient": {
            "name": row["recipient_name"],
            "phone": row["recipient_phone"],
            "email": None,
        },
        "stop": {
            "location": _point(row["stop_lat"], row["stop_lng"]),
            "address": row["stop_address"],
            "window": {"start": row["window_start"], "end": row["window_end"]},
        },
        "weight_kg": float(row["weight_kg"]),
        "status": row["status"],
        "driver_id": row["driver_id"],
        "vehicle_id": row["vehicle_id"],
        "attempts": int(row["attempts"]),
        "failure_reason": row["failure_reason"],
        "delivered_at": row["delivered_at"],
        "delivered_position": _point(row["delivered_lat"], row["delivered_lng"]),
        "deleted_at": row["deleted_at"],
    }


def _parcel_row(doc: Document) -> dict[str, Any]:
    stop, recipient = doc["stop"], doc["recipient"]
    delivered = doc.get("delivered_position") or {}
    return {
        "id": doc["parcel_id"],
        "shipment_id": doc["shipment_id"],
        "client_id": doc["client_id"],
        "recipient_name": recipient["name"],
        "recipient_phone": recipient["phone"],
        "weight_kg": doc["weight_kg"],
        "stop_address": stop["address"],
        "stop_lat": stop["location"]["lat"],
        "stop_lng": stop["location"]["lng"],
        "window_start": stop["window"]["start"],
        "window_end": stop["window"]["end"],
        "status": doc["status"],
        "driver_id": doc.get("driver_id"),
        "vehicle_id": doc.get("vehicle_id"),
        "attempts": doc.get("attempts", 0),
        "failure_reason": doc.get("failure_reason"),
        "delivered_at": doc.get("delivered_at"),
        "delivered_lat": delivered.get("lat"),
        "delivered_lng": delivered.get("lng"),
        "deleted_at": doc.get("deleted_at"),
    }


IDENTITIES_JOB = "sync-identities"
SHIPMENTS_JOB = "sync-shipments"

CLIENTS = Entity(
    "clients",
    "clients",
    "clients",
    "client_id",
    ("id", "name", "email", "deleted_at"),
    IDENTITIES_JOB,
    _client_document,
    _client_row,
)
DRIVERS = Entity(
    "drivers",
    "drivers",
    "drivers",
    "driver_id",
    ("id", "name", "phone", "status", "deleted_at"),
    IDENTITIES_JOB,
    _driver_document,
    _driver_row,
)
VEHICLES = Entity(
    "vehicles",
    "vehicles",
    "vehicles",
    "vehicle_id",
    ("id", "capacity_kg", "capacity_parcels", "depot_lat", "depot_lng", "status", "deleted_at"),
    IDENTITIES_JOB,
    _vehicle_document,
    _vehicle_row,
)
SHIPMENTS = Entity(
    "shipments",
    "shipments",
    "shipments",
    "shipment_id",
    ("id", "client_id", "created_at", "deleted_at"),
    SHIPMENTS_JOB,
    _shipment_document,
    _shipment_row,
)
PARCELS = Entity(
    "parcels",
    "parcels",
    "parcels",
    "parcel_id",
    (
        "id",
        "shipment_id",
        "client_id",
        "recipient_name",
        "recipient_phone",
        "weight_kg",
        "stop_address",
        "stop_lat",
        "stop_lng",
        "window_start",
        "window_end",
        "status",
        "driver_id",
        "vehicle_id",
        "attempts",
        "failure_reason",
        "delivered_at",
        "delivered_lat",
        "delivered_lng",
        "deleted_at",
    ),
    SHIPMENTS_JOB,
    _parcel_document,
    _parcel_row,
)

# In the order a sync applies them: identities before the shipments that name them.
ENTITIES: dict[str, Entity] = {e.name: e for e in (CLIENTS, DRIVERS, VEHICLES, SHIPMENTS, PARCELS)}


def entity(name: str) -> Entity:
    """The entity called ``name``; ValueError naming the known ones otherwise."""
    try:
        return ENTITIES[name]
    except KeyError:
        raise ValueError(
            f"unknown entity {name!r}: it must be one of {', '.join(ENTITIES)}"
        ) from None


# Checksums --------------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """One spelling per value, whichever side it comes from: PostgreSQL's numeric (Decimal) and
    Meridian's float print alike; timestamps in UTC to the microsecond (both keep microseconds)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        return f"{float(value):.6f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(f"no canonical form for {type(value).__name__} {value!r}")


def synced_values(entity: Entity, row: Row) -> dict[str, Any]:
    """A row's synced columns in the one spelling the checksum reads (``to_row`` of a document
    gives the same keys): what a reconciliation report shows of each side."""
    return {column: _canonical(row.get(column)) for column in entity.columns}


def row_checksum(entity: Entity, row: Row) -> str:
    """The checksum of a row's synced columns (a row of the monolith's table, or ``to_row`` of a
    document): equal on both sides exactly when every synced field agrees."""
    values = list(synced_values(entity, row).values())
    encoded = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    """A document value in one spelling, whichever side it comes from (the numbers as floats, so
    PostgreSQL's numeric, an int and a float that are equal agree; timestamps in UTC)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float | Decimal):
        return repr(float(value))
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise TypeError(f"no canonical form for {type(value).__name__} {value!r}")


def field_digests(values: Mapping[str, Any]) -> dict[str, str]:
    """Per field of a document's synced fields (``to_document``'s keys), a digest of its value:
    equal exactly when the values are (what a link keeps as the base of a three-way merge)."""
    return {
        key: hashlib.sha256(
            json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()[:16]
        for key, value in values.items()
    }


def document_checksum(entity: Entity, document: Document) -> str:
    """The checksum of a Meridian document's synced fields, comparable with ``row_checksum``."""
    return row_checksum(entity, entity.to_row(document))
