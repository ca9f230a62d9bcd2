"""The eta reactor's entrypoint: Pub/Sub pushes movement facts (out for delivery, delivered, failed,
geofence) to ``/events``; the scheduler calls ``/tick`` so a window that closes with no movement on
the route is still announced as breached."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header
from starlette.concurrency import run_in_threadpool

from meridian.config import Settings
from meridian.edge.push import reactor_app, serve_reactor
from services.reactors.eta import handlers
from services.reactors.eta.bootstrap import bootstrap
from services.reactors.eta.schedule import SLA_TICK_PATH


def create_app(settings: Settings) -> FastAPI:
    deps, push, scheduler = bootstrap(settings)
    app = reactor_app(
        "eta",
        lambda event: handlers.project(event, deps),
        push.auth,
        push.codec,
        push.own_url,
        handle_batch=lambda events: handlers.project_batch(events, deps),
    )

    @app.post(SLA_TICK_PATH, include_in_schema=False)
    async def tick(authorization: Annotated[str | None, Header()] = None) -> dict[str, int]:
        scheduler.check(authorization, f"{push.own_url}{SLA_TICK_PATH}")
        return {"breaches_announced": await run_in_threadpool(handlers.tick, deps)}

    return app


if __name__ == "__main__":
    serve_reactor("eta", create_app)
