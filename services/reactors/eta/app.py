"""The eta reactor's entrypoint: Pub/Sub pushes movement facts (out for delivery, delivered, failed, geofence) here."""

from __future__ import annotations

from fastapi import FastAPI

from meridian.config import Settings
from meridian.reactor import reactor_app, serve_reactor
from services.reactors.eta import handlers
from services.reactors.eta.bootstrap import bootstrap


def create_app(settings: Settings) -> FastAPI:
    deps, push = bootstrap(settings)
    return reactor_app("eta", lambda event: handlers.project(event, deps), push.auth, push.codec, push.own_url)


if __name__ == "__main__":
    serve_reactor("eta", create_app)
