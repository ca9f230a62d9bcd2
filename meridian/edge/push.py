"""What every reactor shares: its Pub/Sub push endpoint, and the replay of its dead letters.

A reactor is a function ``handle(event)`` that does one effect idempotently. ``reactor_app`` wraps it
in the ``POST /events`` endpoint Pub/Sub pushes to (reference §3): the push token is checked first
(401/403), the envelope and the Avro body are decoded (an undecodable message answers 400, which
Pub/Sub treats as a nack, so it is retried and finally dead-lettered rather than silently dropped),
the trace continues from the ``traceparent`` attribute, and only a handler that returned answers
204. Any error in the handler is a non-2xx answer, hence a retry.

A reactor may also give a batch handler: the events whose pushes arrive while the previous batch
is being handled are then handled together (``Batcher``), so under load a reactor pays its fixed
cost per event (a transaction, a route board read and rewritten) once per batch. Each push is
still answered only when its own event's effect has committed, with its own outcome.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import RandomIdGenerator
from starlette.concurrency import run_in_threadpool

from meridian.codec.events import EventCodec
from meridian.config import Settings
from meridian.domain.errors import DecodeError, MeridianError
from meridian.domain.events import DomainEvent
from meridian.edge.fast_routes import PlainRequest, PlainResponse, PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.observability import (
    current_traceparent,
    extract_context,
    get_logger,
    spans_exported,
)
from meridian.ports import (
    DocumentStore,
    Message,
    Publisher,
    PushAuthenticator,
    Subscriber,
    Transaction,
)

if TYPE_CHECKING:
    import httpx

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)
_IDS = RandomIdGenerator()

Handler = Callable[[DomainEvent], Any]
Item = TypeVar("Item")
# Outcomes in the order of the events; an exception in the place of an event that failed.
BatchHandler = Callable[[Sequence[DomainEvent]], Sequence[Any]]
Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]
DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
SLA_TICK_PATH = "/tick"  # the ETA reactor's scheduled SLA check
# While a batch is handled: each event's push trace, by id() of the event (see ``trace_of``).
_BATCH_TRACES: contextvars.ContextVar[dict[int, str | None] | None] = contextvars.ContextVar(
    "batch_traces", default=None
)


def trace_of(event: object) -> str | None:
    """The ``traceparent`` of the push that brought ``event`` into the batch being handled (None
    outside a batch, or when that push carried none). A batch runs in no one push's trace, so a
    handler that publishes on behalf of one of its events passes this to the codec explicitly."""
    traces = _BATCH_TRACES.get()
    return None if traces is None else traces.get(id(event))


def scheduler_service_account(project: str) -> str:
    """The identity Cloud Scheduler's jobs sign their OIDC tokens with (the embedded platform's
    periodic caller signs as the same one)."""
    return f"scheduler@{project}.iam.gserviceaccount.com"


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
    """The reactor's FastAPI app: ``POST /events`` (push endpoint) and ``GET /healthz``.

    ``own_url`` is the service's base URL; the push token's audience must be ``{own_url}/events``,
    as the push subscription's audience defaults to its endpoint URL (reference §3.4).
    ``handle_batch``, when given, handles the events that arrive together, ``batch_concurrency``
    batches at a time (see ``Batcher``).
    """
    app = PlainRoutes(title=f"Meridian {service} reactor", version="1", lifespan=lifespan)
    batcher = (
        Batcher(handle_batch, handle, concurrency=batch_concurrency)
        if handle_batch is not None
        else None
    )
    install_problem_handlers(app)
    audience = f"{own_url}/events"

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def events(request: PlainRequest) -> PlainResponse:
        auth.check(request.headers.get("authorization"), audience)
        push = decode_envelope(request.body)
        attributes = push.message.attributes
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
            log.info(
                "event processed",
                outcome=str(outcome) if outcome is not None else "done",
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
        finally:
            structlog.contextvars.unbind_contextvars(
                "event_id", "event_type", "message_id", "delivery_attempt"
            )
        return PlainResponse(204)

    # Served before FastAPI's middleware and routing, a third of a reactor's CPU per push when
    # it went through them (``meridian.edge.fast_routes``); errors still answer as problems.
    app.plain_route("POST", "/events", events)
    return app


@contextlib.contextmanager
def _consumer_span(name: str, attributes: Mapping[str, str], message_id: str) -> Iterator[None]:
    """The handler's span, a child of the message's trace (from its ``traceparent``).

    While no span is exported it is a non-recording span made directly, as the sampler would
    have it (``observability.RecordWhenExported``): the tracer's path to the same span (sampler,
    attribute and context managers) was about a tenth of a light reactor's CPU per push."""
    if spans_exported():
        with tracer.start_as_current_span(
            name,
            context=extract_context(attributes),
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.message.id": message_id},
        ):
            yield
        return
    parent = trace.get_current_span(extract_context(attributes)).get_span_context()
    span_id = _IDS.generate_span_id()
    context = (
        trace.SpanContext(parent.trace_id, span_id, False, trace.TraceFlags(0), parent.trace_state)
        if parent.is_valid
        else trace.SpanContext(_IDS.generate_trace_id(), span_id, False)
    )
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(context)))
    try:
        yield
    finally:
        otel_context.detach(token)


class Batcher(Generic[Item]):
    """Hands the events of concurrent pushes (or any items) to a batch handler, at most
    ``concurrency`` batches at a time (one by default).

    An event that arrives while fewer batches run starts one at once (no waiting for company);
    those that arrive while they all run form the next one. So batches grow only under load,
    which is when sharing the per-batch cost matters. A handler whose batches mostly wait on
    external calls (an SMS gateway, a billing API) may run a few at once, so one slow batch does
    not hold back the next. If the batch handler raises as a whole, each event of the batch is
    handled alone by ``handle``, so one poison event fails (and is retried, then dead-lettered)
    alone.
    """

    def __init__(
        self,
        handle_batch: Callable[[Sequence[Item]], Sequence[Any]],
        handle: Callable[[Item], Any],
        max_batch: int = 64,
        concurrency: int = 1,
    ) -> None:
        self._handle_batch = handle_batch
        self._handle = handle
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._traces: dict[int, str | None] = {}  # id() of a pending event → its push's trace
        self._drains: set[asyncio.Task[None]] = set()
        self._running = 0  # drain loops that have not finished (counted before their task ends)
        self.batches = 0  # batches handled, for tests

    async def submit(self, event: Item) -> Any:
        """The outcome of ``event`` once its batch is handled (or its exception)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._traces[id(event)] = current_traceparent()
        if self._running < self._concurrency:
            self._running += 1
            # In a context of its own: the batch's work belongs to no one push's trace and log
            # context (a copy of the first push's would file every later batch under it).
            drain = asyncio.create_task(self._drain(), context=contextvars.Context())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                events = [event for event, _ in batch]
                traces = {id(e): self._traces.pop(id(e), None) for e in events}
                outcomes = await run_in_threadpool(self._run, events, traces)
                self.batches += 1
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue  # the push request went away; the effect stands all the same
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._running -= 1  # with the loop's last look at _pending: nothing is stranded

    def _run(self, events: list[Item], traces: dict[int, str | None]) -> list[Any]:
        token = _BATCH_TRACES.set(traces)
        try:
            return self._run_batch(events)
        finally:
            _BATCH_TRACES.reset(token)

    def _run_batch(self, events: list[Item]) -> list[Any]:
        try:
            outcomes = list(self._handle_batch(events))
        except Exception as e:
            if len(events) == 1:
                return [e]
            log.warning("batch failed; handling its events one by one", error=repr(e))
            outcomes = []
            for event in events:
                try:
                    outcomes.append(self._handle(event))
                except Exception as alone:
                    outcomes.append(alone)
        return outcomes


class RememberedTokens(PushAuthenticator):
    """Accepts again, until it expires, a push token ``auth`` has accepted for an audience.

    Pub/Sub and Eventarc sign one token per audience and reuse it for up to an hour, so every
    push after the first carries a token already verified; verifying it again (PyJWT's parse and
    an RS256 signature check) was about a quarter of a millisecond of every push. Only the exact
    token string is remembered, with the expiry it carries, so nothing is accepted that ``auth``
    would refuse, except a token whose signing key is withdrawn before it expires.
    """

    def __init__(
        self, auth: PushAuthenticator, clock: Callable[[], float] = time.time, size: int = 256
    ) -> None:
        self._auth = auth
        self._clock = clock
        self._size = size
        self._accepted: dict[tuple[str, str], float] = {}

    def check(self, authorization: str | None, audience: str) -> None:
        key = (authorization or "", audience)
        expiry = self._accepted.get(key)
        if expiry is not None and self._clock() < expiry:
            return
        self._auth.check(authorization, audience)
        expiry = _expiry(authorization or "")
        if expiry is not None:
            if len(self._accepted) >= self._size:
                self._accepted.clear()  # old tokens of audiences that no longer call
            self._accepted[key] = expiry


def _expiry(authorization: str) -> float | None:
    """The ``exp`` claim of a bearer JWT (already verified), None if it has none."""
    try:
        payload = authorization.partition(" ")[2].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


def group_commit(
    store: DocumentStore, prepare: Callable[[DomainEvent], Callable[[Transaction], Any] | str]
) -> BatchHandler:
    """A batch handler for reactors whose effect is one transaction per event: ``prepare``
    (reads and lookups outside the transaction) gives the event's transaction function, or its
    outcome if there is nothing to write, and the batch's transactions commit together
    (``DocumentStore.run_transactions``: one SQLite commit embedded, each in a savepoint of its
    own, so one that raises fails alone; one by one on Firestore). Fewer commits is less
    waiting for the store's one write lock, which every service's writes share."""

    def handle_batch(events: Sequence[DomainEvent]) -> list[Any]:
        outcomes: list[Any] = []
        functions: dict[int, Callable[[Transaction], Any]] = {}
        for i, event in enumerate(events):
            prepared: Any
            try:
                prepared = prepare(event)
            except Exception as e:
                prepared = e
            outcomes.append(prepared)
            if callable(prepared):
                functions[i] = prepared
        committed = store.run_transactions(list(functions.values())) if functions else []
        for i, outcome in zip(functions, committed, strict=True):
            outcomes[i] = outcome
        return outcomes

    return handle_batch


@dataclass(frozen=True)
class PushEssentials:
    """What every reactor's bootstrap builds the same way."""

    auth: PushAuthenticator
    codec: EventCodec
    own_url: str


def push_essentials(settings: Settings, service: str) -> PushEssentials:
    """Push authentication (only Pub/Sub's push identity may call), the codec, the service URL."""
    from meridian import adapters
    from meridian.catalog import load_catalog
    from meridian.embedded.pubsub.broker import push_service_account

    auth = adapters.push_authenticator(
        settings, frozenset({push_service_account(settings.project)})
    )
    return PushEssentials(
        RememberedTokens(auth), EventCodec(load_catalog()), settings.url_of(service)
    )


@dataclass(frozen=True)
class PushedMessage:
    message: Message
    message_id: str
    delivery_attempt: int


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
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise DecodeError(f"not a Pub/Sub push envelope: {e}") from None


def serve_reactor(service: str, build: Callable[[Settings], FastAPI]) -> None:
    """A reactor's ``main()``: settings from the environment, ``build(settings)``, serve on $PORT."""
    from meridian.edge.serve import serve

    settings = Settings.from_env()
    serve(build(settings), service, settings.port_of(service))


@contextlib.asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


async def call_on_schedule(
    url: str, token: Callable[[], str], every_s: float, client: httpx.AsyncClient | None = None
) -> None:
    """What a Cloud Scheduler HTTP job does: ``POST url`` with an OIDC token every ``every_s``
    seconds, forever (cancel to stop). A failed call is logged and the next one comes on schedule,
    as a job without retries does; the target must be idempotent."""
    import httpx

    async with contextlib.AsyncExitStack() as stack:
        http = client
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        while True:
            await asyncio.sleep(every_s)
            try:
                response = await http.post(url, headers={"Authorization": f"Bearer {token()}"})
                if response.status_code >= 300:
                    log.warning("scheduled call refused", url=url, status=response.status_code)
            except httpx.HTTPError as e:
                log.warning("scheduled call failed", url=url, error=str(e))


def replay_dead_letters(
    subscriber: Subscriber,
    publisher: Publisher,
    dead_letters: str,
    topic: str,
    source_subscription: str | None = None,
    max_messages: int = 1000,
) -> int:
    """Republish dead letters to ``topic`` (attributes as originally published) and ack them.

    Only those dead-lettered from ``source_subscription`` when given; others are nacked back.
    Every reactor deduplicates by event id, so reactors that had already processed a replayed
    event acknowledge it without a second effect. Returns how many were replayed.
    """
    replayed = 0
    while replayed < max_messages:
        batch = subscriber.pull(dead_letters, min(100, max_messages - replayed))
        if not batch:
            return replayed
        chosen, others = [], []
        for received in batch:
            source = received.message.attributes.get(f"{DEAD_LETTER_PREFIX}SourceSubscription", "")
            if source_subscription is None or source.rsplit("/", 1)[-1] == source_subscription:
                chosen.append(received)
            else:
                others.append(received)
        if chosen:
            publisher.publish(topic, [_original(r.message) for r in chosen])
            subscriber.acknowledge(dead_letters, [r.ack_id for r in chosen])
            replayed += len(chosen)
        if others:
            subscriber.nack(dead_letters, [r.ack_id for r in others])
            if not chosen:
                return replayed
    return replayed


def _original(message: Message) -> Message:
    attributes = {
        k: v for k, v in message.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)
    }
    return Message(message.data, attributes, message.ordering_key)


__all__: Sequence[str] = (
    "Batcher",
    "RememberedTokens",
    "call_on_schedule",
    "group_commit",
    "push_essentials",
    "reactor_app",
    "replay_dead_letters",
    "scheduler_service_account",
    "serve_reactor",
    "trace_of",
)
