"""Static checks of ``firestore.rules``.

Why not evaluated: the only evaluator of Firestore rules is Google's Firestore emulator, a Java
jar that ``firebase-tools`` downloads from Google's storage on first use (it is in no package
registry, and needs a JRE); the emulator this repo pins from npm (``@firestore-emulator/server``)
does not evaluate rules at all. With the Firebase emulator available, the same cases belong in a
``@firebase/rules-unit-testing`` suite: these checks pin the shape of the guarantee until then.
"""

from __future__ import annotations

import re
from pathlib import Path

RULES = (Path(__file__).resolve().parents[2] / "firestore.rules").read_text()


def block(match_path: str) -> str:
    """The body of ``match <match_path> { … }`` (braces balanced)."""
    start = RULES.index(f"match {match_path} {{")
    depth = 0
    for index in range(start + len(f"match {match_path} "), len(RULES)):
        depth += {"{": 1, "}": -1}.get(RULES[index], 0)
        if depth == 0:
            return RULES[start : index + 1]
    raise AssertionError(f"unbalanced braces after match {match_path}")


def code(text: str) -> str:
    return re.sub(r"//[^\n]*", "", text)


def test_rules_are_version_2_and_balanced() -> None:
    assert RULES.startswith("rules_version = '2';")
    assert code(RULES).count("{") == code(RULES).count("}")


def test_everything_not_named_is_denied() -> None:
    assert "allow read, write: if false;" in code(block("/{document=**}"))


def test_no_client_writes_anywhere() -> None:
    allows = re.findall(r"allow ([a-z, ]+):\s*if ([^;]+);", code(RULES))
    writes = [
        (ops, cond) for ops, cond in allows if "write" in ops or "create" in ops or "update" in ops
    ]
    assert writes and all(cond.strip() == "false" for _, cond in writes)


def test_a_customer_reads_only_their_parcels_vehicle_while_out_for_delivery() -> None:
    rule = code(block("/live_map/{vehicleId}"))
    get = re.search(r"allow get: if ([^;]+);", rule)
    assert get is not None
    condition = get.group(1)
    for needed in (
        "tracks(request.auth.token.parcel_id)",
        "outForDelivery(request.auth.token.parcel_id)",
        ".vehicle_id == vehicleId",
    ):
        assert needed in condition
    assert "allow list: if dispatcher();" in rule  # customers cannot enumerate the fleet


def test_a_tracking_grant_is_scoped_and_expires() -> None:
    tracks = code(RULES)[code(RULES).index("function tracks") :]
    tracks = tracks[: tracks.index("}")]
    assert "request.auth.token.scope == 'track'" in tracks
    assert "request.auth.token.parcel_id == parcelId" in tracks
    assert "request.time <" in tracks


def test_customers_never_read_the_parcel_document_with_its_personal_data() -> None:
    assert "allow read: if dispatcher();" in code(block("/parcels/{parcelId}"))
    assert "tracks(parcelId) && outForDelivery(parcelId)" in code(
        block("/parcel_status/{parcelId}")
    )
