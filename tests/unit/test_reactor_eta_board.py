"""What the ETA reactor keeps on a route board: a delivered stop holds only what the map and its
SLA need, and its status view is not rewritten after its delivery."""

from __future__ import annotations

from datetime import datetime, timedelta

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from services.live_map.tracking import route_view
from services.reactors.eta import handlers as eta
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.fakes_reactors import FakeTravelTime
from tests.unit.test_reactors import T0, delivered, out


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _deps(clock: Clock) -> eta.Deps:
    return eta.Deps(
        FakeDocumentStore(), FakePublisher(), EventCodec(load_catalog()), FakeTravelTime(), clock
    )


def _stops(deps: eta.Deps) -> dict[str, dict[str, object]]:
    board = deps.store.get("route_board/r-1")
    assert board is not None
    stops: dict[str, dict[str, object]] = board.data["stops"]
    return stops


def test_a_delivered_stop_keeps_what_the_map_and_its_sla_need() -> None:
    clock = Clock(T0)
    deps = _deps(clock)
    for parcel, sequence, lat in (("p-1", 0, 12.97), ("p-2", 1, 13.00)):
        eta.project(out(parcel, lat=lat).model_copy(update={"stop_sequence": sequence}), deps)
    pending = _stops(deps)["p-1"]
    assert {"announced_eta", "shown_eta", "shown_sla", "client_id"} <= set(pending)
    assert "at_risk" not in pending  # on time: kept only while true
    eta.project(delivered("p-1", at=T0 + timedelta(minutes=5)), deps)
    done = _stops(deps)["p-1"]
    assert set(done) == {
        "sequence",
        "parcel_id",
        "lat",
        "lng",
        "window_end",
        "status",
        "eta",
        "done_at",
    }
    board = deps.store.get("route_board/r-1")
    assert board is not None
    view = route_view(board)
    assert [(s["parcel_id"], s["status"]) for s in view["stops"]] == [
        ("p-1", "delivered"),
        ("p-2", "pending"),
    ]
    assert view["stops"][0]["eta"] == T0.isoformat()


def test_a_delivered_stops_view_is_written_once_whatever_moves_after() -> None:
    clock = Clock(T0)
    deps = _deps(clock)
    eta.project(out("p-1", lat=12.97), deps)
    eta.project(out("p-2", lat=13.00), deps)
    clock.now = T0 + timedelta(minutes=1)
    eta.project(delivered("p-1", at=T0 + timedelta(minutes=5)), deps)
    written = deps.store.get("parcel_status/p-1")
    assert written is not None and written.data["sla"] == "met" and written.data["eta"] is None
    clock.now = T0 + timedelta(minutes=2)
    late = delivered("p-2", at=T0 + timedelta(hours=3)).model_copy(update={"lat": 13.00})
    eta.project(late, deps)  # breaches p-2's window; p-1's view stays as its delivery left it
    assert deps.store.get("parcel_status/p-1") == written
    p2 = deps.store.get("parcel_status/p-2")
    assert p2 is not None and p2.data["sla"] == "breached"
    assert eta.tick(deps) == 0  # nothing pending is left open
    assert deps.store.get("parcel_status/p-1") == written


def test_a_board_written_before_delivered_stops_were_slimmed_reads_the_same() -> None:
    # Boards from before still carry the old fields (shown_eta None, at_risk False, …) on
    # delivered stops: they are read as before and left as they are.
    clock = Clock(T0)
    deps = _deps(clock)
    eta.project(out("p-1", lat=12.97), deps)
    eta.project(out("p-2", lat=13.00), deps)
    board = deps.store.get("route_board/r-1")
    assert board is not None
    legacy = dict(board.data)
    legacy["stops"] = {
        "p-1": {
            **legacy["stops"]["p-1"],
            "status": "delivered",
            "done_at": T0,
            "shown_eta": None,
            "shown_sla": "met",
            "at_risk": False,
        },
        "p-2": {**legacy["stops"]["p-2"], "at_risk": False},
    }
    deps.store.set("route_board/r-1", legacy)
    clock.now = T0 + timedelta(minutes=3)
    eta.project(
        delivered("p-2", at=T0 + timedelta(minutes=12)).model_copy(update={"lat": 13.0}), deps
    )
    p1 = deps.store.get("parcel_status/p-1")
    assert p1 is not None and p1.data["updated_at"] == T0  # not rewritten
    stops = _stops(deps)
    assert stops["p-1"]["shown_sla"] == "met"  # a delivered stop is left as it was
    assert set(stops["p-2"]) >= {"done_at", "eta"} and "shown_sla" not in stops["p-2"]
