"""The billing reactor's entrypoint: Pub/Sub pushes ParcelDelivered and ShipmentClosed here."""

from __future__ import annotations

from fastapi import FastAPI

from meridian.config import Settings
from meridian.edge.push import reactor_app, serve_reactor
from services.reactors.billing import handlers
from services.reactors.billing.bootstrap import bootstrap


def create_app(settings: Settings) -> FastAPI:
    deps, push = bootstrap(settings)
    return reactor_app(
        "billing",
        lambda event: handlers.bill(event, deps),
        push.auth,
        push.codec,
        push.own_url,
        handle_batch=lambda events: handlers.bill_batch(events, deps),
        # Its batches mostly wait on the billing API: a few at once.
        batch_concurrency=4,
    )


if __name__ == "__main__":
    serve_reactor("billing", create_app)
