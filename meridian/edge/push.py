"""How a push comes in: the Pub/Sub push endpoint every reactor serves.

A reactor is a function ``handle(event)`` that does one effect idempotently. ``reactor_app`` wraps it
in the ``POST /events`` endpoint Pub/Sub pushes to (reference §3): a body over ``PUSH_BODY_LIMIT``
is refused (413) before it is read; the push token is checked before anything of the body is judged
(401 without one or with one that does not verify, 403 for another identity's,
``meridian.edge.push_auth``); the envelope and the Avro body are decoded (an undecodable message
answers 400, which Pub/Sub treats as a nack, so it is retried and finally dead-lettered rather than
silently dropped); the trace continues from the ``traceparent`` attribute; and only a handler that
returned answers 204. Any error in the handler is a non-2xx answer, hence a retry.

A reactor may also give a batch handler: the events whose pushes arrive while the previous batch
is being handled are then handled together (``meridian.concurrency.batches.Batcher``), so under
load a reactor pays its fixed cost per event (a transaction, a route board read and rewritten)
once per batch. Each push is still answered only when its own event's effect has committed, with
its own outcome. A reactor's bootstrap builds what the endpoint needs with
``meridian.adapters.push_essentials``; dead-letter replay is ``meridian.app.replay``.

Each decoded push is counted by the subscription its envelope names and its outcome (acked: 204;
nacked: any other answer), its handling timed, and its lag from its commit (the event's
``occurred_at``) to its handling observed (``meridian.metrics``); the request itself is counted
with every other request by ``PlainRoutes``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.concurrency import run_in_threadpool

from meridian import metrics
from meridian.codec.events import EventCodec
from meridian.concurrency.batches import Batcher
from meridian.config import Settings
from meridian.domain.errors import DecodeError, MeridianError
from meridian.domain.events import DomainEvent
from meridian.edge.api_docs import serve_api_docs
from meridian.edge.body_limits import MIB, BodyLimits
from meridian.edge.fast_routes import PlainRequest, PlainResponse, PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.observability import extract_context, get_logger
from meridian.ports import Message, PushAuthenticator

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

Handler = Callable[[DomainEvent], Any]
# Outcomes in the order of the events; an exception in the place of an event that failed.
BatchHandler = Callable[[Sequence[DomainEvent]], Sequence[Any]]
Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]
# Pub/Sub's largest message (10 MB) base64-encoded in its push envelope, with its attributes.
PUSH_BODY_LIMIT = 16 * MIB


def reactor_app(
    service: str,
    handle: Handler,
    auth: PushAuthenticator,
    codec: EventCodec,
    own_url: str,
    lifespan: Lifespan | None = None,
    handle_batch: BatchHandler | None = None,
    batch_concurrency: int = 1,
) -> FastAPI:
    """The reactor's FastAPI app: ``POST /events`` (push endpoint), ``GET /healthz`` and its
    API's documentation (``GET /docs``).

    ``own_url`` is the service's base URL; the push token's audience must be ``{own_url}/events``,
    as the push subscription's audience defaults to its endpoint URL (reference §3.4).
    ``handle_batch``, when given, handles the events that arrive together, ``batch_concurrency``
    batches at a time (see ``Batcher``).
    """
    app = PlainRoutes(
        title=f"Meridian {service} reactor",
        version="1",
        lifespan=lifespan,
        body_limits=BodyLimits(routes={("POST", "/events"): PUSH_BODY_LIMIT}),
    )
    batcher = (
        Batcher(handle_batch, handle, concurrency=batch_concurrency)
        if handle_batch is not None
        else None
    )
    install_problem_handlers(app)
    audience = f"{own_url}/events"
    measured: dict[str, metrics.PushMetrics] = {}  # subscription: its children, made once

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def events(request: PlainRequest) -> PlainResponse:
        auth.check(request.headers.get("authorization"), audience)
        push = decode_envelope(request.body)
        attributes = push.message.attributes
        subscription = push.subscription or service
        counts = measured.get(subscription)
        if counts is None:
            counts = measured[subscription] = metrics.push_metrics(subscription)
        acked = False
        structlog.contextvars.bind_contextvars(
            event_id=attributes.get("eventId"),
            event_type=attributes.get("eventType"),
            message_id=push.message_id,
            delivery_attempt=push.delivery_attempt,
        )
        try:
            try:
                event = codec.from_message(push.message.data, attributes)
            except DecodeError as e:
                # Answered 400 (a nack): after max attempts it lands in the dead-letter topic.
                log.error("undecodable event; it will be retried then dead-lettered", error=str(e))
                raise
            started = time.perf_counter()
            with _consumer_span(f"{service} {event.event_type}", attributes, push.message_id):
                try:
                    if batcher is not None:
                        outcome = await batcher.submit(event)
                    else:
                        outcome = await run_in_threadpool(handle, event)
                except MeridianError as e:
                    log.warning("event not processed; Pub/Sub will retry it", error=repr(e))
                    raise
            took = time.perf_counter() - started
            counts.seconds.observe(took)
            counts.lag.observe(time.time() - event.occurred_at.timestamp())
            acked = True
            log.info(
                "event processed",
                outcome=str(outcome) if outcome is not None else "done",
                ms=round(took * 1000, 1),
            )
        finally:
            (counts.acked if acked else counts.nacked).inc()
            structlog.contextvars.unbind_contextvars(
                "event_id", "event_type", "message_id", "delivery_attempt"
            )
        return PlainResponse(204)

    # Served before FastAPI's middleware and routing, a third of a reactor's CPU per push when
    # it went through them (``meridian.edge.fast_routes``); errors still answer as problems.
    # A handler's error is answered as its domain error maps (``meridian.edge.problems``).
    app.plain_route(
        "POST",
        "/events",
        events,
        "Pub/Sub push of one event (wrapped envelope)",
        errors=(400, 401, 403, 404, 409, 413, 422, 503),
    )
    serve_api_docs(app)
    return app


@contextlib.contextmanager
def _consumer_span(name: str, attributes: Mapping[str, str], message_id: str) -> Iterator[None]:
    """The handler's span, a child of the message's trace (from its ``traceparent``).

    Started through the tracer whether or not spans are exported, so a traced run runs the same
    code as an untraced one: with no exporter the sampler (``observability.RecordWhenExported``)
    hands back a non-recording span, and only a recording span is given its attributes."""
    span = tracer.start_span(
        name, context=extract_context(attributes), kind=trace.SpanKind.CONSUMER
    )
    if span.is_recording():
        span.set_attribute("messaging.message.id", message_id)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    except BaseException as e:
        if span.is_recording():
            span.record_exception(e)
            span.set_status(trace.StatusCode.ERROR)
        raise
    finally:
        otel_context.detach(token)
        span.end()


@dataclass(frozen=True)
class PushEssentials:
    """What every reactor's endpoint needs, built the same way by its bootstrap
    (``meridian.adapters.push_essentials``)."""

    auth: PushAuthenticator
    codec: EventCodec
    own_url: str


@dataclass(frozen=True)
class PushedMessage:
    message: Message
    message_id: str
    delivery_attempt: int
    subscription: str = ""  # the short name of the subscription that pushed it


def decode_envelope(body: bytes) -> PushedMessage:
    """Pub/Sub's wrapped push envelope (reference §3.1); DecodeError if it is not one.

    (``meridian.gcp.pubsub.decode_push_request`` does the same but imports the Pub/Sub client
    library, about 3 s of start-up per reactor process; reactors need only the JSON.)
    """
    try:
        envelope = json.loads(body)
        raw = envelope["message"]
        data = base64.b64decode(raw.get("data", ""), validate=True)
        return PushedMessage(
            Message(data, dict(raw.get("attributes") or {}), raw.get("orderingKey", "")),
            str(raw.get("messageId") or raw["message_id"]),
            int(envelope.get("deliveryAttempt", 0)),
            str(envelope.get("subscription") or "").rpartition("/")[2],
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise DecodeError(f"not a Pub/Sub push envelope: {e}") from None


def serve_reactor(service: str, build: Callable[[Settings], FastAPI]) -> None:
    """A reactor's ``main()``: settings from the environment, ``build(settings)``, serve on $PORT."""
    from meridian.edge.serve import serve

    settings = Settings.from_env()
    serve(build(settings), settings, service)
