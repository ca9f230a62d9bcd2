"""The update mask follows Firestore's equality, not Python's."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from meridian.embedded.docstore.values import changed_paths


def test_the_mask_lists_only_values_firestore_considers_changed() -> None:
    old = {
        "status": "OUT_FOR_DELIVERY",
        "count": 1,
        "ratio": math.nan,
        "load": 1.5,
        "at": datetime(2026, 11, 21, 9, 30),  # naive: taken as UTC
        "flag": True,
        "m": {"by": "drv-1", "n": None},
    }
    new = {
        "status": "DELIVERED",
        "count": 1.0,  # equal in Firestore, but a change of type is still a change
        "ratio": math.nan,  # NaN equals NaN in Firestore
        "load": 2.5,
        "at": datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
        "flag": 1,  # but True is not 1
        "m": {"by": "drv-2", "n": None},
    }
    assert changed_paths(old, new) == ["count", "flag", "load", "m.by", "status"]
