"""The six reactors' handlers on fakes: their effects, and no second effect on redelivery."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from meridian.app.tracking import TrackingTokens
from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain import events as ev
from meridian.domain.errors import NotFound
from meridian.ports import Query
from services.reactors.billing import handlers as billing
from services.reactors.driver_scoring import handlers as scoring
from services.reactors.eta import handlers as eta
from services.reactors.notification import handlers as notification
from services.reactors.pod import handlers as pod
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.fakes_reactors import FakeBillingApi, FakeBlobStore, FakeSmsGateway, FakeTravelTime
from tests.unit.test_metrics import counter

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _common(parcel: str = "p-1") -> dict[str, Any]:
    return {
        "parcel_id": parcel,
        "shipment_id": "s-1",
        "client_id": "c-1",
        "route_id": "r-1",
        "driver_id": "drv-1",
        "vehicle_id": "veh-1",
        "recipient_phone": "+919800000001",
    }


def out(
    parcel: str = "p-1", lat: float = 12.97, end: datetime = T0 + timedelta(hours=2)
) -> ev.ParcelOutForDelivery:
    return ev.ParcelOutForDelivery(
        event_id=f"evt-out-{parcel}", occurred_at=T0, **_common(parcel), lat=lat, lng=77.59,
        address="1 MG Road", window_start=T0, window_end=end, attempt=1,
    )  # fmt: skip


def delivered(
    parcel: str = "p-1", at: datetime = T0 + timedelta(minutes=30), **extra: Any
) -> ev.ParcelDelivered:
    return ev.ParcelDelivered(
        event_id=f"evt-del-{parcel}", occurred_at=at, **_common(parcel), delivered_at=at,
        lat=12.97, lng=77.59, window_end=T0 + timedelta(hours=2), **extra,
    )  # fmt: skip


def failed(parcel: str = "p-2") -> ev.DeliveryFailed:
    at = T0 + timedelta(minutes=40)
    return ev.DeliveryFailed(
        event_id=f"evt-fail-{parcel}",
        occurred_at=at,
        **_common(parcel),
        failed_at=at,
        reason="nobody home",
        attempt=1,
    )


# Billing -----------------------------------------------------------------------------------------


def test_billing_charges_once_per_event_with_a_key_from_the_event_id() -> None:
    store, api = FakeDocumentStore(), FakeBillingApi()
    store.set("billing_tariffs/default", {"per_delivery_minor": 4500, "currency": "INR"})
    deps = billing.Deps(store, api, lambda: T0)
    assert billing.bill(delivered(), deps).startswith("charged")
    assert billing.bill(delivered(), deps) == "duplicate"
    assert api.calls == 1 and list(api.charges) == ["meridian-evt-del-p-1"]
    entry = store.get("billing_ledger/evt-del-p-1")
    assert entry is not None and entry.data["amount_minor"] == 4500


def test_billing_without_a_tariff_raises_so_the_event_is_retried_then_dead_lettered() -> None:
    deps = billing.Deps(FakeDocumentStore(), FakeBillingApi(), lambda: T0)
    with pytest.raises(NotFound):
        billing.bill(delivered(), deps)


# Notification ------------------------------------------------------------------------------------


def _notification() -> tuple[notification.Deps, FakeSmsGateway]:
    sms = FakeSmsGateway()
    deps = notification.Deps(
        FakeDocumentStore(), sms, TrackingTokens(b"k" * 32), "http://track.example", lambda: T0
    )
    return deps, sms


def test_out_for_delivery_sms_carries_a_tracking_link_valid_for_the_parcel() -> None:
    deps, sms = _notification()
    notification.notify(out(), deps)
    ((to, body),) = sms.sent.values()
    # The live map's customer page, the token in the fragment (never sent to a server or logged).
    link = urlsplit(body.rsplit(" ", 1)[1])
    assert to == "+919800000001" and body.endswith("Track it: " + link.geturl())
    assert (link.scheme, link.netloc, link.path) == ("http", "track.example", "/map")
    assert parse_qs(link.query) == {"parcel": ["p-1"]}
    token = parse_qs(link.fragment)["token"][0]
    assert "token" not in link.query and token not in link.query
    assert deps.tracking.verify(token, "p-1").parcel_id == "p-1"


def test_a_redelivered_event_sends_no_second_sms() -> None:
    deps, sms = _notification()
    for _ in range(3):
        notification.notify(delivered(), deps)
    assert sms.calls == 1 and len(sms.sent) == 1


def test_eta_changes_are_sent_only_beyond_the_threshold() -> None:
    deps, _sms = _notification()
    notification.notify(out(), deps)

    def update(n: int, eta_at: datetime) -> ev.RouteEtaUpdated:
        stop = ev.StopEta(
            parcel_id="p-1", sequence=0, eta=eta_at, window_end=T0 + timedelta(hours=2)
        )
        return ev.RouteEtaUpdated(
            event_id=f"evt-eta-{n}", occurred_at=T0, route_id="r-1", stops=(stop,)
        )

    notification.notify(update(1, T0 + timedelta(minutes=30)), deps)  # baseline, not sent
    notification.notify(update(2, T0 + timedelta(minutes=40)), deps)  # 10 min: within threshold
    notification.notify(update(3, T0 + timedelta(minutes=50)), deps)  # 20 min from baseline: sent
    kinds = [d.data["kind"] for d in deps.store.query(Query("notifications"))]
    assert sorted(kinds) == ["eta_changed", "out_for_delivery"]


def test_each_recorded_sms_is_counted_once_and_a_redelivery_or_failure_counts_none() -> None:
    deps, sms = _notification()
    before = counter("meridian_sms_sent_total")
    sms.down = True
    with pytest.raises(Exception, match="down"):
        notification.notify(delivered(), deps)
    assert counter("meridian_sms_sent_total") == before  # not sent, nothing recorded
    sms.down = False
    for _ in range(3):
        notification.notify(delivered(), deps)  # sent and recorded once; then duplicates
    assert counter("meridian_sms_sent_total") - before == 1
    notification.notify(out("p-3"), deps)
    baseline = ev.RouteEtaUpdated(
        event_id="evt-eta-count",
        occurred_at=T0,
        route_id="r-1",
        stops=(ev.StopEta(parcel_id="p-3", sequence=0, eta=T0, window_end=T0),),
    )
    notification.notify(baseline, deps)  # the first ETA is recorded, not sent
    assert counter("meridian_sms_sent_total") - before == 2


def test_a_gateway_failure_is_raised_and_nothing_is_recorded() -> None:
    deps, sms = _notification()
    sms.down = True
    with pytest.raises(Exception, match="down"):
        notification.notify(delivered(), deps)
    assert deps.store.get("processed_events/notification:evt-del-p-1") is None


# ETA ---------------------------------------------------------------------------------------------


def _eta() -> tuple[eta.Deps, FakePublisher]:
    publisher = FakePublisher()
    codec = EventCodec(load_catalog())
    return eta.Deps(FakeDocumentStore(), publisher, codec, FakeTravelTime(), lambda: T0), publisher


def test_eta_projects_the_route_board_and_parcel_status_and_announces_updates() -> None:
    deps, _publisher = _eta()
    eta.project(out("p-1", lat=12.97), deps)
    eta.project(out("p-2", lat=13.00), deps)
    board = deps.store.get("route_board/r-1")
    assert board is not None and set(board.data["stops"]) == {"p-1", "p-2"}
    status = deps.store.get("parcel_status/p-2")
    assert status is not None and status.data["eta"] == T0 + timedelta(seconds=600)
    assert status.data["sla"] == "on_track" and status.data["route_id"] == "r-1"
    eta.project(delivered("p-1"), deps)
    done = deps.store.get("parcel_status/p-1")
    assert done is not None and done.data["sla"] == "met" and done.data["eta"] is None
    assert deps.store.get("eta_outbox/evt-del-p-1") is None  # published and cleared


def test_eta_announces_sla_at_risk_once_and_breach_when_the_window_closed() -> None:
    deps, publisher = _eta()
    eta.project(out("p-1", lat=12.97, end=T0 + timedelta(minutes=5)), deps)  # 0 min away: on time
    eta.project(out("p-2", lat=13.10, end=T0 + timedelta(minutes=5)), deps)  # 10 min away: late
    eta.project(
        out("p-2", lat=13.10, end=T0 + timedelta(minutes=5)).model_copy(update={"event_id": "x"}),
        deps,
    )
    late = failed("p-1").model_copy(update={"failed_at": T0 + timedelta(minutes=6)})
    eta.project(late, deps)
    types = [m.attributes["eventType"] for m in _all(publisher)]
    assert types.count("SlaAtRisk") == 1
    assert types.count("SlaBreached") == 1
    assert "RouteEtaUpdated" in types


def test_a_breach_is_counted_once_its_publication_succeeds_and_never_again() -> None:
    deps, publisher = _eta()
    before = counter("meridian_sla_breaches_total")
    eta.project(out("p-1", lat=12.97, end=T0 + timedelta(minutes=5)), deps)
    eta.project(out("p-2", lat=13.00, end=T0 + timedelta(hours=2)), deps)
    late = failed("p-2").model_copy(
        update={"event_id": "evt-late", "failed_at": T0 + timedelta(minutes=6)}
    )
    publisher.fail_with = RuntimeError("broker down")
    with pytest.raises(RuntimeError):
        eta.project(late, deps)  # committed with its outbox entry, not published
    assert counter("meridian_sla_breaches_total") == before
    publisher.fail_with = None
    assert eta.project(late, deps).startswith("duplicate; 2 republished")  # breach, new ETAs
    assert counter("meridian_sla_breaches_total") - before == 1
    eta.project(late, deps)  # redelivered again: nothing left to publish
    assert eta.tick(deps) == 0  # the stop is marked breached: the tick announces nothing
    assert [m.attributes["eventType"] for m in _all(publisher)].count("SlaBreached") == 1
    assert counter("meridian_sla_breaches_total") - before == 1


def test_a_breach_the_tick_announces_is_counted_once() -> None:
    deps, _publisher = _eta()
    eta.project(out("p-1", lat=12.97, end=T0 + timedelta(minutes=5)), deps)
    before = counter("meridian_sla_breaches_total")
    later = replace(deps, clock=lambda: T0 + timedelta(minutes=6))
    assert eta.tick(later) == 1
    assert eta.tick(later) == 0
    assert counter("meridian_sla_breaches_total") - before == 1


def _all(publisher: FakePublisher) -> list[Any]:
    return [m for _, m in publisher.published]


def test_eta_redelivery_changes_nothing_and_announces_nothing_new() -> None:
    deps, publisher = _eta()
    eta.project(out(), deps)
    before = len(_all(publisher))
    assert eta.project(out(), deps).startswith("duplicate")
    assert len(_all(publisher)) == before


# Proof of delivery -------------------------------------------------------------------------------


def test_pod_completes_when_the_photo_lands_whatever_the_order() -> None:
    blobs = FakeBlobStore()
    deps = pod.Deps(FakeDocumentStore(), blobs, lambda: T0)
    assert pod.finalise_pod(delivered(pod_photo_ref="mem://pod/p-1.jpg"), deps) == "pod pending"
    ref = blobs.put("pod/p-1.jpg", b"jpeg", "image/jpeg")
    image = ev.PodImageReceived(
        event_id="evt-img",
        occurred_at=T0,
        parcel_id="p-1",
        blob_ref=ref,
        content_type="image/jpeg",
        size_bytes=4,
    )
    assert pod.finalise_pod(image, deps) == "pod complete"
    assert pod.finalise_pod(image, deps) == "duplicate"
    status = deps.store.get("parcel_status/p-1")
    assert status is not None and status.data["pod_complete"] is True


def test_pod_with_a_signature_only_is_complete() -> None:
    deps = pod.Deps(FakeDocumentStore(), FakeBlobStore(), lambda: T0)
    assert pod.finalise_pod(delivered(pod_signature_ref="sig-123"), deps) == "pod complete"


# Driver scoring ----------------------------------------------------------------------------------


def test_driver_scores_count_each_event_once() -> None:
    deps = scoring.Deps(FakeDocumentStore(), lambda: T0)
    scoring.score_driver(delivered("p-1"), deps)
    scoring.score_driver(delivered("p-1"), deps)  # redelivery
    scoring.score_driver(delivered("p-3", at=T0 + timedelta(hours=3)), deps)  # late
    scoring.score_driver(failed("p-2"), deps)
    idle = ev.VehicleIdle(
        event_id="evt-idle",
        occurred_at=T0,
        vehicle_id="veh-1",
        idle_since=T0,
        lat=0,
        lng=0,
        radius_m=20,
        idle_seconds=300,
    )
    scoring.score_driver(idle, deps)
    score = deps.store.get("driver_scores/drv-1")
    assert score is not None
    assert score.data["delivered"] == 2 and score.data["failed"] == 1
    assert score.data["on_time_rate"] == 0.5 and score.data["failed_rate"] == round(1 / 3, 4)
    assert score.data["idle_seconds"] == 300
    assert score.data["deliveries_per_hour"] == round(2 / 2.5, 2)
