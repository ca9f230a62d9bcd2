"""What the legacy writer needs of the monolith's tables: the port its handler writes through.

One ``LegacyTables.transaction()`` per batch of events; inside it, each event is claimed (its id
recorded as processed), its parcel read and locked, and its changes written, all or nothing per
event (``savepoint``); the client, shipment and parcel rows of a record created in Meridian are
inserted when the monolith lacks them (``insert``). The PostgreSQL adapter is
``services.sync.writer.postgres``; the unit tests' fake subclasses this port, and
``tests/contract/test_legacy_tables.py`` holds both to the same semantics.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.sync.entities import Entity

# The parcel columns the push direction writes: the status and what goes with it.
PUSHED_COLUMNS = (
    "status",
    "driver_id",
    "vehicle_id",
    "attempts",
    "failure_reason",
    "delivered_at",
    "delivered_lat",
    "delivered_lng",
)


@dataclass(frozen=True)
class Fact:
    """A Meridian event about one parcel, as the processed-events table records it."""

    event_id: str
    event_type: str
    parcel_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class LegacyParcel:
    """A parcel row: the pushed columns (``values``), who changed it last (``written_by``:
    ``monolith`` or ``meridian``) and when (``updated_at``, the monolith's clock); ``pulled``:
    whether the pull's cursor has passed that change (it is in Meridian, or on its way)."""

    parcel_id: str
    values: Mapping[str, Any]
    written_by: str
    updated_at: datetime
    version: int
    pulled: bool = True

    @property
    def status(self) -> str:
        return str(self.values["status"])


class LegacyTransaction(ABC):
    """One transaction on the monolith's database."""

    @abstractmethod
    def claim(self, fact: Fact) -> bool:
        """Record ``fact``'s event as processed; False if it already was (a redelivery)."""

    @abstractmethod
    def parcel(self, parcel_id: str) -> LegacyParcel | None:
        """The parcel's row, locked until the transaction ends; None if the monolith has none."""

    @abstractmethod
    def newer_fact(self, fact: Fact) -> bool:
        """Whether another event about the same parcel that occurred after ``fact`` was claimed."""

    @abstractmethod
    def update_parcel(
        self, parcel_id: str, changes: Mapping[str, Any], *, as_bridge: bool = True
    ) -> None:
        """Write ``changes`` (``PUSHED_COLUMNS`` only): the row's ``version`` goes up by one and
        its ``updated_at`` is the transaction's time. ``as_bridge``: its ``written_by`` becomes
        ``meridian``, so the pull never brings the write back; otherwise it stays
        ``monolith``, so the pull still brings the monolith's change it has not read yet."""

    @abstractmethod
    def insert(self, entity: Entity, row: Mapping[str, Any]) -> bool:
        """Insert ``row`` (``entity.columns``, as ``entity.to_row`` gives them) into the entity's
        table as the bridge's (``written_by = 'meridian'``, version 1), unless the table already
        holds its id: then nothing changes. Whether it was inserted."""

    @abstractmethod
    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """A block whose claims and writes are undone, alone, when it raises."""


class LegacyTables(ABC):
    """The monolith's database, as the push direction writes it."""

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[LegacyTransaction]:
        """A transaction, committed when the block returns and rolled back when it raises."""

    def close(self) -> None:  # noqa: B027 - an adapter holding nothing has nothing to close
        """Release what the adapter holds (connections)."""
