"""The client-webhook reactor's entrypoint: Pub/Sub pushes client-visible events here; the sender
loop delivers them to the clients' endpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI

from meridian.config import Settings
from meridian.domain.events import DomainEvent
from meridian.edge.push import reactor_app, serve_reactor
from services.reactors.webhook import handlers
from services.reactors.webhook.bootstrap import bootstrap
from services.reactors.webhook.worker import Worker


def create_app(settings: Settings) -> FastAPI:
    deps, push = bootstrap(settings)
    worker = Worker(deps)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(worker.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def handle(event: DomainEvent) -> str:
        return handle_batch([event])[0]

    def handle_batch(events: Sequence[DomainEvent]) -> list[str]:
        enqueued, claimed = handlers.enqueue_claimed(events, deps)
        worker.send_now(claimed)
        return [f"{len(paths)} deliveries enqueued" for paths in enqueued]

    return reactor_app(
        "client-webhook", handle, push.auth, push.codec, push.own_url, lifespan, handle_batch
    )


if __name__ == "__main__":
    serve_reactor("client-webhook", create_app)
