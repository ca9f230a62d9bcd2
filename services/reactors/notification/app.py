"""The notification reactor's entrypoint: Pub/Sub pushes parcel and ETA events here."""

from __future__ import annotations

from fastapi import FastAPI

from meridian.config import Settings
from meridian.edge.push import reactor_app, serve_reactor
from services.reactors.notification import handlers
from services.reactors.notification.bootstrap import bootstrap


def create_app(settings: Settings) -> FastAPI:
    deps, push = bootstrap(settings)
    return reactor_app(
        "notification",
        lambda event: handlers.notify(event, deps),
        push.auth,
        push.codec,
        push.own_url,
        handle_batch=lambda events: handlers.notify_batch(events, deps),
        # Its batches mostly wait on the SMS gateway: a few at once.
        batch_concurrency=4,
    )


if __name__ == "__main__":
    serve_reactor("notification", create_app)
