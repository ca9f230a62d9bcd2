"""The event publisher: Eventarc's Firestore trigger target.

It answers 2xx only once the event is published; anything else makes Eventarc retry. The caller's
token is checked before anything of the event is read (401, or 403 for another identity than
Eventarc's), and a body over ``BODY_LIMITS`` is refused (413) before it is read.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI
from opentelemetry import context as otel_context

from meridian.codec.firestore_values import decode_document_event
from meridian.concurrency.batches import Batcher
from meridian.domain.errors import DecodeError
from meridian.edge.api_docs import serve_api_docs
from meridian.edge.body_limits import MIB, BodyLimits
from meridian.edge.fast_routes import PlainRequest, PlainResponse, PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.observability import extract_context, get_logger
from meridian.ports import PushAuthenticator
from services.event_publisher.handlers import Deps, DocumentChange, publish_change, publish_changes

log = get_logger(__name__)
# A Firestore document is at most 1 MiB, and a change carries the old and the new one: twice
# that, with room for their encoding.
BODY_LIMITS = BodyLimits(routes={("POST", "/firestore"): 4 * MIB})


def change_from_cloudevent(headers: Mapping[str, str], body: bytes) -> DocumentChange:
    """Read a binary-mode Firestore CloudEvent (reference §5.2-5.5)."""
    event_type = headers.get("ce-type", "")
    if not event_type.startswith("google.cloud.firestore.document.v1."):
        raise DecodeError(f"not a Firestore document event: ce-type {event_type!r}")
    document = headers.get("ce-document") or headers.get("ce-subject", "").removeprefix(
        "documents/"
    )
    if not document:
        raise DecodeError("the event names no document (ce-document / ce-subject)")
    # Decoded by the Firestore value mapping on the raw protobuf messages (its docstring says
    # why: through proto-plus wrappers a parcel document took about 2 ms, the publisher's main
    # cost per event).
    old, new, update_time = decode_document_event(body)
    return DocumentChange(path=document, old=old, new=new, update_time=update_time)


def create_app(deps: Deps, auth: PushAuthenticator, own_url: str) -> FastAPI:
    app = PlainRoutes(title="Meridian event publisher", version="1", body_limits=BODY_LIMITS)
    install_problem_handlers(app)
    # The changes Eventarc delivers together are published together: a publish is a write
    # transaction on the broker, which the platform's pulls and acks wait behind.
    batcher: Batcher[tuple[DocumentChange, str | None]] = Batcher(
        lambda batch: publish_changes(batch, deps), lambda one: publish_change(one[0], deps, one[1])
    )
    audience = f"{own_url}/firestore"

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def firestore_change(request: PlainRequest) -> PlainResponse:
        auth.check(request.headers.get("authorization"), audience)
        change = change_from_cloudevent(request.headers, request.body)
        traceparent = request.headers.get("traceparent")
        event = await batcher.submit((change, traceparent))
        if event is not None:
            # Logged in the trace of the change (the event published continues it too).
            token = otel_context.attach(extract_context({"traceparent": traceparent or ""}))
            try:
                log.info(
                    "event published",
                    event_type=event.event_type,
                    event_id=event.event_id,
                    document=change.path,
                )
            finally:
                otel_context.detach(token)
        return PlainResponse(204)

    # Served before FastAPI's middleware and routing (``meridian.edge.fast_routes``), which were
    # two thirds of the publisher's CPU per change; errors still answer as problems.
    app.plain_route(
        "POST",
        "/firestore",
        firestore_change,
        "Eventarc's Firestore document change (binary-mode CloudEvent)",
        "application/protobuf",
    )
    serve_api_docs(app)
    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.edge.serve import serve
    from services.event_publisher.bootstrap import bootstrap

    settings = Settings.from_env()
    serve(create_app(*bootstrap(settings)), settings, "event-publisher")


if __name__ == "__main__":
    main()
