"""An in-memory monolith for the legacy writer's unit tests: ``FakeLegacyTables`` subclasses the
port (``services.sync.writer.tables``) and is held to the PostgreSQL adapter's semantics by
``tests/contract/test_legacy_tables.py``: transactions and savepoints all or nothing, a claimed
event id stays claimed, a write stamps ``written_by = 'meridian'``, the version and the time, an
insert leaves a row it already has alone."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from services.sync.entities import PARCELS, Entity
from services.sync.writer.tables import (
    PUSHED_COLUMNS,
    Fact,
    LegacyParcel,
    LegacyTables,
    LegacyTransaction,
)

EMPTY_PARCEL: dict[str, Any] = {
    "status": "CREATED",
    "driver_id": None,
    "vehicle_id": None,
    "attempts": 0,
    "failure_reason": None,
    "delivered_at": None,
    "delivered_lat": None,
    "delivered_lng": None,
}


@dataclass
class _State:
    parcels: dict[str, LegacyParcel] = field(default_factory=dict)
    processed: dict[str, Fact] = field(default_factory=dict)
    inserted: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (table, id)


class _FakeTransaction(LegacyTransaction):
    def __init__(self, state: _State, now: datetime) -> None:
        self.state = state
        self._now = now

    def claim(self, fact: Fact) -> bool:
        if fact.event_id in self.state.processed:
            return False
        self.state.processed[fact.event_id] = fact
        return True

    def parcel(self, parcel_id: str) -> LegacyParcel | None:
        return self.state.parcels.get(parcel_id)

    def newer_fact(self, fact: Fact) -> bool:
        return any(
            f.parcel_id == fact.parcel_id
            and f.occurred_at > fact.occurred_at
            and f.event_id != fact.event_id
            for f in self.state.processed.values()
        )

    def update_parcel(
        self, parcel_id: str, changes: Mapping[str, Any], *, as_bridge: bool = True
    ) -> None:
        unknown = set(changes) - set(PUSHED_COLUMNS)
        if unknown:
            raise ValueError(f"the push direction writes {PUSHED_COLUMNS}, not {sorted(unknown)}")
        row = self.state.parcels[parcel_id]
        self.state.parcels[parcel_id] = LegacyParcel(
            parcel_id,
            {**row.values, **changes},
            written_by="meridian" if as_bridge else "monolith",
            updated_at=self._now,
            version=row.version + 1,
            pulled=False,  # a new change, past any cursor
        )

    def insert(self, entity: Entity, row: Mapping[str, Any]) -> bool:
        key = (entity.table, str(row["id"]))
        if key in self.state.inserted or (entity is PARCELS and key[1] in self.state.parcels):
            return False
        self.state.inserted[key] = {c: row[c] for c in entity.columns}
        if entity is PARCELS:
            self.state.parcels[key[1]] = LegacyParcel(
                key[1],
                {c: row[c] for c in PUSHED_COLUMNS},
                written_by="meridian",
                updated_at=self._now,
                version=1,
                pulled=False,
            )
        return True

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        before = copy.deepcopy(self.state)
        try:
            yield
        except BaseException:
            self.state.parcels, self.state.processed = before.parcels, before.processed
            self.state.inserted = before.inserted
            raise


class FakeLegacyTables(LegacyTables):
    """The monolith's parcels and the processed-events table, in memory; ``clock`` is the
    database's ``now()``, read once per transaction as PostgreSQL does."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._state = _State()
        self._clock = clock
        self.transactions = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LegacyTransaction]:
        working = copy.deepcopy(self._state)
        yield _FakeTransaction(working, self._clock())
        self._state = working
        self.transactions += 1

    # What a test arranges and inspects ---------------------------------------------------------

    def add_parcel(
        self,
        parcel_id: str,
        *,
        written_by: str = "monolith",
        updated_at: datetime | None = None,
        pulled: bool = True,
        **values: Any,
    ) -> None:
        """A parcel as the monolith wrote it (``values`` over a new parcel's); ``pulled``: the
        pull's cursor has passed it."""
        self._state.parcels[parcel_id] = LegacyParcel(
            parcel_id,
            {**EMPTY_PARCEL, **values},
            written_by=written_by,
            updated_at=updated_at or self._clock(),
            version=1,
            pulled=pulled,
        )

    def pull_past(self, parcel_id: str) -> None:
        """The pull's cursor moved past the parcel's latest change."""
        self._state.parcels[parcel_id] = replace(self._state.parcels[parcel_id], pulled=True)

    def row(self, parcel_id: str) -> LegacyParcel:
        return self._state.parcels[parcel_id]

    def processed(self) -> set[str]:
        return set(self._state.processed)

    def inserted(self, table: str, row_id: str) -> dict[str, Any] | None:
        """The row the bridge inserted into ``table`` (its synced columns), if it did."""
        return self._state.inserted.get((table, row_id))
