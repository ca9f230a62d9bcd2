"""The legacy writer's entrypoint: Pub/Sub pushes Meridian's parcel facts here, and each is
written into the monolith's PostgreSQL (``services.sync.writer.handlers``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from meridian.config import Settings
from meridian.edge.push import reactor_app, serve_reactor
from services.sync.writer import handlers
from services.sync.writer.bootstrap import CONCURRENCY, SERVICE, bootstrap


def create_app(settings: Settings) -> FastAPI:
    deps, push = bootstrap(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            deps.tables.close()

    return reactor_app(
        SERVICE,
        lambda event: handlers.write_back(event, deps),
        push.auth,
        push.codec,
        push.own_url,
        lifespan=lifespan,
        handle_batch=lambda events: handlers.write_back_batch(events, deps),
        batch_concurrency=CONCURRENCY,
    )


if __name__ == "__main__":
    serve_reactor(SERVICE, create_app)
