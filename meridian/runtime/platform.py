"""The platform process: the embedded stand-in for Google's managed side.

It answers for the runtime as a whole (health, the topology it runs from the catalog). Push
delivery, the Eventarc emulation, the Workflows engine and the BigQuery-subscription sink attach
here as they are built, each with its own module.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from meridian.catalog import Catalog, PushDelivery, load_catalog
from meridian.config import Settings


def topology(catalog: Catalog, settings: Settings) -> dict[str, Any]:
    """The topology the runtime serves: topics, event types and subscriptions with their routes."""
    subscriptions = {}
    for name, sub in catalog.subscriptions.items():
        route: str = sub.delivery.type
        if isinstance(sub.delivery, PushDelivery):
            route = f"push {settings.url_of(sub.delivery.service)}{sub.delivery.path}"
        subscriptions[name] = {
            "topic": sub.topic,
            "filter": sub.filter,
            "delivery": route,
            "dead_letter_topic": sub.dead_letter_topic,
            "max_delivery_attempts": sub.max_delivery_attempts,
            "ordering": sub.ordering,
        }
    return {
        "topics": sorted(catalog.topics),
        "event_types": {
            n: {"topic": e.topic, "version": e.version, "producer": e.producer}
            for n, e in catalog.event_types.items()
        },
        "subscriptions": subscriptions,
    }


def create_app(catalog: Catalog, settings: Settings) -> FastAPI:
    app = FastAPI(title="Meridian embedded platform", version="1")
    served = topology(catalog, settings)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/topology")
    def get_topology() -> dict[str, Any]:
        return served

    return app


def main() -> None:
    from meridian.runtime.serve import serve

    settings = Settings.from_env()
    serve(create_app(load_catalog(), settings), "platform", settings.port_of("platform"))


if __name__ == "__main__":
    main()
