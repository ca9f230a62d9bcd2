"""The pod reactor's entrypoint: Pub/Sub pushes its events here."""

from __future__ import annotations

from fastapi import FastAPI

from meridian.concurrency.group_commit import commit_per_event
from meridian.config import Settings
from meridian.domain.events import DomainEvent
from meridian.edge.push import reactor_app, serve_reactor
from services.reactors.pod import handlers
from services.reactors.pod.bootstrap import bootstrap


def create_app(settings: Settings) -> FastAPI:
    deps, push, transactions = bootstrap(settings)

    def handle(event: DomainEvent) -> str:
        return handlers.finalise_pod(event, deps)

    # Store work only (and a quick blob lookup): a batch commits together.
    return reactor_app(
        "pod",
        handle,
        push.auth,
        push.codec,
        push.own_url,
        handle_batch=commit_per_event(
            transactions, lambda event: handlers.pod_transaction(event, deps)
        ),
    )


if __name__ == "__main__":
    serve_reactor("pod", create_app)
