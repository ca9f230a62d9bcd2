"""ETA: recompute the remaining stops of a route on every movement fact, project the route board
and each parcel's status view, and announce RouteEtaUpdated / SlaAtRisk / SlaBreached.

The projections, the processed-event record and the events to announce (an outbox entry) commit in
one transaction; the outbox is published and cleared afterwards, and a redelivered event publishes
whatever a crash left there. Announced events have ids derived from the triggering event, so a
second publication is deduplicated downstream. The events pushed together are projected together
(``project_batch``): a route board is read, recomputed and written once per batch, not per event.

A parcel's status view is rewritten only when what it shows changed materially (its SLA state, or
its ETA by ``ETA_MATERIAL`` or more), and RouteEtaUpdated is announced only when some remaining
ETA is new or moved that much: a movement on a 100-stop route used to rewrite 100 status documents
and announce 100 unchanged ETAs, most of the event plane's load, while the customer sees minutes.
What was last shown and announced is kept on the board's stop (``shown_eta``, ``shown_sla``,
``announced_eta``) while it is to come; a delivered stop keeps only what the map and its SLA need.
The board is a ``RouteBoard`` (``board.py``: its stops, its document shape, how a fact folds in).

SLA breach is judged two ways, whichever comes first: when the route is recomputed (any movement on
it), and by ``tick`` (Cloud Scheduler in GCP, the platform's periodic caller embedded), which finds
the boards whose earliest open window (``next_due``, kept on the board as a due-time index) has
closed. A stop is marked breached on the board in the transaction that announces it, and the
SlaBreached id derives from the parcel and its window only, so a parcel is announced breached once
whichever path sees it first, however often either runs. Each SlaBreached is counted
(``meridian.metrics.sla_breached``) when the outbox entry that holds it is published, after the
commit; an entry published twice (a crash between its publication and its clearing, or another
instance's leftover in flight) is counted twice, as it is published twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meridian import metrics
from meridian.app.idempotency import already_processed, mark_processed
from meridian.codec.events import EventCodec
from meridian.concurrency.batches import trace_of
from meridian.domain.events import (
    DeliveryFailed,
    DomainEvent,
    GeofenceCrossed,
    ParcelDelivered,
    RouteEtaUpdated,
    SlaAtRisk,
    SlaBreached,
    StopEta,
    derive_event_id,
    event_class,
)
from meridian.ports import DocumentStore, GeoPoint, Publisher, Query, Transaction, TravelTime
from services.reactors.eta.board import DELIVERED, PENDING, BoardStop, RouteBoard

CONSUMER = "eta"
BOARDS = "route_board"
STATUS = "parcel_status"
OUTBOX = "eta_outbox"
ETA_MATERIAL = timedelta(minutes=1)  # a status view's ETA is rewritten when it moves this much
TICK_BATCH = 100  # boards judged per tick transaction


@dataclass(frozen=True)
class Deps:
    store: DocumentStore
    publisher: Publisher
    codec: EventCodec
    travel: TravelTime
    clock: Callable[[], datetime]


def route_of(event: DomainEvent) -> str | None:
    route = getattr(event, "route_id", None)
    if route:
        return str(route)
    parcel = getattr(event, "parcel_id", None)
    return f"solo-{parcel}" if parcel else None  # a parcel sent out without a planned route


def recompute(board: RouteBoard, travel: TravelTime) -> list[BoardStop]:
    """ETAs of the pending stops in sequence order, from the vehicle's last known position, or
    from its first stop while no delivery or geofence crossing has said where it is (a route's
    first estimate must not depend on which of its parcels' events happened to arrive first).

    A pending stop planned before the one the vehicle was last delivering at is behind it: its
    delivery is usually on its way (deliveries of one route are different parcels, so Pub/Sub may
    hand them over in any order), or the driver will come back. It keeps the estimate it had rather
    than one for driving back to it, which would tell its customer a time that is wrong either way.
    """
    pending = sorted(
        (s for s in board.stops.values() if s.status == PENDING), key=lambda s: s.sequence
    )
    at_stop = -1 if board.at_stop is None else board.at_stop
    ahead = [s for s in pending if s.sequence > at_stop or s.eta is None]
    assert board.as_of is not None  # set by every fact folded in
    at = board.as_of
    if board.position is not None:
        here = board.position
    elif pending:
        here = GeoPoint(lat=pending[0].lat, lng=pending[0].lng)
    for stop in ahead:
        there = GeoPoint(lat=stop.lat, lng=stop.lng)
        at = at + timedelta(seconds=travel.seconds(here, there, at))
        stop.eta = at
        here = there
    return pending


def _announcements(
    trigger: DomainEvent, route_id: str, board: RouteBoard, pending: list[BoardStop]
) -> list[DomainEvent]:
    def ident(kind: str, subject: str) -> str:
        return derive_event_id(CONSUMER, trigger.event_id, kind, subject)

    now = trigger.occurred_at
    out: list[DomainEvent] = []
    if any(_moved(s.eta, s.announced_eta) for s in pending):
        # Announced only when an ETA is new or moved materially: a driver on schedule moves no
        # ETA, and re-announcing the same 100 ETAs on every delivery only made every consumer
        # re-read the route for nothing. The event still carries every remaining stop.
        for stop in pending:
            stop.announced_eta = stop.eta
        out.append(
            RouteEtaUpdated(
                event_id=ident("RouteEtaUpdated", route_id),
                occurred_at=now,
                route_id=route_id,
                vehicle_id=board.vehicle_id,
                driver_id=board.driver_id,
                stops=tuple(
                    StopEta(
                        parcel_id=s.parcel_id,
                        sequence=s.sequence,
                        eta=_eta(s),
                        window_end=s.window_end,
                    )
                    for s in pending
                ),
            )
        )
    real_route = None if route_id.startswith("solo-") else route_id
    assert board.as_of is not None
    for stop in pending:
        eta = _eta(stop)
        if stop.window_end <= board.as_of and not stop.breached:
            out.append(_breach(stop, route_id, now))
        elif stop.breached:
            continue
        elif eta > stop.window_end and not stop.at_risk:
            stop.at_risk = True
            out.append(
                SlaAtRisk(
                    event_id=ident("SlaAtRisk", stop.parcel_id),
                    occurred_at=now,
                    parcel_id=stop.parcel_id,
                    route_id=real_route,
                    client_id=_client(stop),
                    eta=eta,
                    window_end=stop.window_end,
                    minutes_late=round((eta - stop.window_end).total_seconds() / 60, 1),
                )
            )
        elif eta <= stop.window_end:
            stop.at_risk = False  # back on time: a later slip is announced again
    return out


def _eta(stop: BoardStop) -> datetime:
    assert stop.eta is not None  # recompute estimated every stop to come
    return stop.eta


def _client(stop: BoardStop) -> str:
    assert stop.client_id is not None  # a stop to come was sent out for its client
    return stop.client_id


def _moved(eta: datetime | None, shown: datetime | None) -> bool:
    """Whether an ETA differs materially from the one last shown or announced."""
    if eta is None or shown is None:
        return eta is not shown
    return abs(eta - shown) >= ETA_MATERIAL


def _breach(stop: BoardStop, route_id: str, now: datetime) -> SlaBreached:
    """Mark ``stop`` breached and the event that says so; one id per parcel and window, so the
    route-event path and the tick cannot announce the same breach twice."""
    stop.breached = True
    return SlaBreached(
        event_id=derive_event_id(
            CONSUMER, "SlaBreached", stop.parcel_id, stop.window_end.isoformat()
        ),
        occurred_at=now,
        parcel_id=stop.parcel_id,
        route_id=None if route_id.startswith("solo-") else route_id,
        client_id=_client(stop),
        window_end=stop.window_end,
    )


def _save(
    tx: Transaction,
    route_id: str,
    board: RouteBoard,
    now: datetime,
    finished: Collection[datetime] = (),
) -> int:
    """Write the board, and the status view of every stop whose view changed materially (plus the
    stops ``finished`` just now); returns how many status views were written. The board keeps
    ``next_due``, the earliest window end among pending stops not yet announced breached."""
    active = False
    due: datetime | None = None
    written = 0
    for stop in board.stops.values():
        status = stop.status
        if status == DELIVERED:
            if stop.done_at not in finished:
                continue  # its view is final: written by the delivery (just below)
            eta, sla = None, stop.sla()
            stop.settle()
        else:
            pending = status == PENDING
            if pending:
                active = True
                if not stop.breached and (due is None or stop.window_end < due):
                    due = stop.window_end
            eta = stop.eta if pending else None
            sla = stop.sla()
            if not (
                _moved(eta, stop.shown_eta) or sla != stop.shown_sla or stop.done_at in finished
            ):
                continue
            stop.shown_eta = eta  # none is not written: the board is smaller
            stop.shown_sla = sla
        tx.set(
            f"{STATUS}/{stop.parcel_id}",
            {
                "parcel_id": stop.parcel_id,
                "route_id": route_id,
                "eta": eta,
                "sla": sla,
                "updated_at": now,
            },
            merge=True,
        )
        written += 1
    board.active, board.updated_at, board.next_due = active, now, due
    tx.set(f"{BOARDS}/{route_id}", board.to_document())
    return written


def _boards_for(tx: Transaction, event: DomainEvent, loaded: dict[str, RouteBoard]) -> list[str]:
    """The routes ``event`` moves, their boards loaded into ``loaded`` (route → board, shared by
    the events of one batch, so a board is read and written once per batch)."""
    if isinstance(event, GeofenceCrossed):
        # Active boards of the vehicle as this batch left them, then as committed before it.
        routes = [
            route_id
            for route_id, board in loaded.items()
            if board.vehicle_id == event.vehicle_id and board.pending()
        ]
        found = tx.query(
            Query(BOARDS).where("vehicle_id", "==", event.vehicle_id).where("active", "==", True)
        )
        for document in found:
            if document.id not in loaded:
                loaded[document.id] = RouteBoard.from_document(document.id, document.data)
                routes.append(document.id)
        return routes
    route_id = route_of(event)
    if route_id is None:
        return []
    if route_id not in loaded:
        current = tx.get(f"{BOARDS}/{route_id}")
        loaded[route_id] = (
            RouteBoard.from_document(route_id, current.data) if current else RouteBoard(route_id)
        )
    return [route_id]


def project(event: DomainEvent, deps: Deps) -> str:
    return project_batch([event], deps)[0]


def project_batch(events: Sequence[DomainEvent], deps: Deps) -> list[str]:
    """Project the movement facts of a batch in one transaction: each route they touch is read,
    folded with all of its events in arrival order, recomputed, announced and written once.

    A route's announcements derive their ids from the last of its events in the batch; they are
    committed in the outbox with the projections and the processed-event entries, published
    after the commit, and then cleared. A redelivered event (already processed) publishes
    whatever an earlier crash left in the outbox, whichever batch left it.
    """
    now = deps.clock()

    def record(
        tx: Transaction,
    ) -> tuple[list[str], list[DomainEvent], list[dict[str, Any]], str | None]:
        outcomes: list[str] = []
        fresh: list[DomainEvent] = []
        for event in events:
            if any(e.event_id == event.event_id for e in fresh) or already_processed(
                tx, CONSUMER, event.event_id
            ):
                outcomes.append("duplicate")
            else:
                fresh.append(event)
                outcomes.append("")
        boards: dict[str, RouteBoard] = {}
        last: dict[str, DomainEvent] = {}  # route → its last event in the batch
        finished: dict[str, set[datetime]] = {}  # route → when its stops in the batch finished
        for event in fresh:
            for route_id in _boards_for(tx, event, boards):
                boards[route_id].fold(event)
                last[route_id] = event
                if (done := _done_at(event)) is not None:
                    finished.setdefault(route_id, set()).add(done)
        announced: list[DomainEvent] = []
        traces: list[str | None] = []  # each announcement continues its trigger's trace
        for route_id, trigger in last.items():
            board = boards[route_id]
            if board.as_of is None:
                continue  # a stop finished before we ever saw it go out: nothing to estimate
            pending = recompute(board, deps.travel)
            new = _announcements(trigger, route_id, board, pending)
            announced += new
            traces += [trace_of(trigger)] * len(new)
            _save(tx, route_id, board, now, finished.get(route_id, ()))
        key = fresh[0].event_id if fresh and announced else None
        entries = _outbox_entries(announced, traces)
        if key is not None:
            _to_outbox(tx, key, entries)
        for event in fresh:
            mark_processed(tx, CONSUMER, event.event_id, now)
        return outcomes, announced, entries, key

    outcomes, announced, entries, key = deps.store.run_transaction(record)
    if key is not None:
        # Published from the fields the outbox holds: the events are dumped once, not twice.
        messages = [
            deps.codec.record_message(e["type"], e["body"], e["traceparent"]) for e in entries
        ]
        for topic, batch in deps.codec.by_topic(messages).items():
            deps.publisher.publish(topic, batch)
        _count_breaches(entries)
        deps.store.delete(f"{OUTBOX}/{key}")
    republished = publish_leftovers(deps) if "duplicate" in outcomes else 0
    return [
        f"duplicate; {republished} republished"
        if outcome == "duplicate"
        else f"{len(announced)} events announced in a batch of {len(events)}"
        for outcome in outcomes
    ]


def _outbox_entries(
    announced: list[DomainEvent], traces: Sequence[str | None] = ()
) -> list[dict[str, Any]]:
    """The outbox's form of the events to announce: type, fields and the trace each continues."""
    traces = list(traces) or [None] * len(announced)
    return [
        {"type": e.event_type, "body": e.model_dump(mode="python"), "traceparent": t}
        for e, t in zip(announced, traces, strict=True)
    ]


def _to_outbox(tx: Transaction, key: str, entries: list[dict[str, Any]], **marks: Any) -> None:
    if entries:
        tx.set(f"{OUTBOX}/{key}", {"events": entries, **marks})


def tick(deps: Deps) -> int:
    """Announce SlaBreached for every pending stop whose window has closed, though no event came.

    Boards are found by their due-time index (``next_due`` ≤ now); each batch is judged, marked
    and put in the outbox in one transaction, then published. Returns how many breaches were
    announced. A crash between the commit and the publication leaves the outbox entry, which the
    next tick publishes (same event ids, deduplicated downstream).
    """
    now = deps.clock()
    for leftover in deps.store.query(Query(OUTBOX).where("tick", "==", True)):
        publish_outbox(leftover.id, deps)
    total = batch = 0
    while True:
        key = f"tick-{now.isoformat()}-{batch}"

        def judge(tx: Transaction, key: str = key) -> tuple[int, list[DomainEvent]]:
            due = tx.query(Query(BOARDS).where("next_due", "<=", now).limit(TICK_BATCH))
            announced: list[DomainEvent] = []
            for document in due:
                board = RouteBoard.from_document(document.id, document.data)
                announced += [
                    _breach(stop, document.id, now)
                    for stop in board.stops.values()
                    if stop.status == PENDING and not stop.breached and stop.window_end <= now
                ]
                _save(tx, document.id, board, now)  # next_due moves past ``now``
            _to_outbox(tx, key, _outbox_entries(announced), tick=True)
            return len(due), announced

        boards, announced = deps.store.run_transaction(judge)
        publish_outbox(key, deps)
        total += len(announced)
        if boards < TICK_BATCH:
            return total
        batch += 1


def _done_at(event: DomainEvent) -> datetime | None:
    if isinstance(event, ParcelDelivered):
        return event.delivered_at
    if isinstance(event, DeliveryFailed):
        return event.failed_at
    return None


def publish_outbox(key: str, deps: Deps) -> int:
    """Publish what the transaction that wrote outbox entry ``key`` left to announce, then clear
    it."""
    entry = deps.store.get(f"{OUTBOX}/{key}")
    if entry is None:
        return 0
    messages = [
        deps.codec.to_message(
            event_class(e["type"]).model_validate(e["body"]), e.get("traceparent")
        )
        for e in entry.data["events"]
    ]
    for topic, batch in deps.codec.by_topic(messages).items():
        deps.publisher.publish(topic, batch)
    _count_breaches(entry.data["events"])
    deps.store.delete(f"{OUTBOX}/{key}")
    return len(entry.data["events"])


def _count_breaches(published: Sequence[dict[str, Any]]) -> None:
    """Count the SlaBreached among outbox entries just published (never inside a transaction,
    which may run again)."""
    breaches = sum(1 for e in published if e["type"] == SlaBreached.event_type)
    if breaches:
        metrics.sla_breached(breaches)


def publish_leftovers(deps: Deps, limit: int = 100) -> int:
    """Publish every outbox entry a crash left between commit and publication (normally none).
    Another instance's entry published twice is harmless: the events keep their ids, and
    consumers deduplicate them."""
    return sum(
        publish_outbox(leftover.id, deps)
        for leftover in deps.store.query(Query(OUTBOX).limit(limit))
    )
