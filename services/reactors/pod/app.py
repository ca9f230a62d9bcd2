"""The pod reactor's entrypoint: Pub/Sub pushes its events here."""

from __future__ import annotations

from fastapi import FastAPI

from meridian.config import Settings
from meridian.reactor import reactor_app, serve_reactor
from services.reactors.pod import handlers
from services.reactors.pod.bootstrap import bootstrap


def create_app(settings: Settings) -> FastAPI:
    deps, push = bootstrap(settings)
    return reactor_app("pod", lambda event: handlers.finalise_pod(event, deps), push.auth, push.codec, push.own_url)


if __name__ == "__main__":
    serve_reactor("pod", create_app)
