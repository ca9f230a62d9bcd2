"""The driver-scoring reactor's entrypoint: Pub/Sub pushes its events here."""

from __future__ import annotations

from fastapi import FastAPI

from meridian.concurrency.group_commit import commit_per_event
from meridian.config import Settings
from meridian.domain.events import DomainEvent
from meridian.edge.push import reactor_app, serve_reactor
from services.reactors.driver_scoring import handlers
from services.reactors.driver_scoring.bootstrap import bootstrap


def create_app(settings: Settings) -> FastAPI:
    deps, push, transactions = bootstrap(settings)

    def handle(event: DomainEvent) -> str:
        return handlers.score_driver(event, deps)

    # Store work only: a batch commits together.
    return reactor_app(
        "driver-scoring",
        handle,
        push.auth,
        push.codec,
        push.own_url,
        handle_batch=commit_per_event(
            transactions, lambda event: handlers.score_transaction(event, deps)
        ),
    )


if __name__ == "__main__":
    serve_reactor("driver-scoring", create_app)
