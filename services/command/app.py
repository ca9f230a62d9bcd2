"""The command service: accept fast, write once, answer 202.

Entrypoint only: it builds the app from the feature routers (``routes/``), whose routes
authenticate, parse HTTP, call a handler (``handlers/``) and map errors to problem details, and
holds each route's body to its limit (``BODY_LIMITS``). Everything that happens after the commit
happens elsewhere, off this path.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from meridian.concurrency.group_commit import Committer, Transactions
from meridian.concurrency.offload import Offload
from meridian.edge.api_docs import serve_api_docs
from meridian.edge.body_limits import KIB, MIB, BodyLimits
from meridian.edge.fast_routes import PlainRoutes
from meridian.edge.problems import install_problem_handlers
from meridian.ports import BlobStore, IdentityVerifier, WorkflowExecutions
from services.command.handlers import Deps
from services.command.handlers.pod import MAX_IMAGE_BYTES
from services.command.routes import (
    dispatch,
    fleet,
    parcels,
    pod,
    schedules,
    sync,
    telemetry,
    webhooks,
)
from services.command.routes.common import document_credentials

# Each route's natural maximum: the largest valid request of its kind, which
# tests/unit/test_body_limits.py sends. Every other route takes a JSON command of a few fields
# (the default, 64 KiB).
BODY_LIMITS = BodyLimits(
    routes={
        # 500 pings (MAX_PINGS_PER_BATCH), every field at its longest (~250 KiB), indented
        ("POST", "/v1/telemetry"): 512 * KIB,
        # 500 parcels, names and addresses at their longest and written as \u escapes
        ("POST", "/v1/shipments"): 4 * MIB,
        ("PUT", "/v1/parcels/{parcel_id}/pod-image"): MAX_IMAGE_BYTES,
        # a geofence at MAX_FENCE_VERTICES positions, each coordinate at its longest, indented
        ("POST", "/v1/geofences"): 256 * KIB,
        ("PATCH", "/v1/geofences/{item_id}"): 256 * KIB,
    }
)


def create_app(
    deps: Deps,
    verifier: IdentityVerifier,
    workflows: WorkflowExecutions | None = None,
    blobs: Callable[[], BlobStore] | None = None,
    transactions: Transactions | None = None,
    ingest: Offload | None = None,
    scheduler: schedules.SchedulerCalls | None = None,
) -> FastAPI:
    """``transactions`` and ``ingest`` are the bootstrap's choices for the adapters in use (how
    moves commit, where telemetry is ingested); by default, those safe for any adapter: each
    move in a worker thread, each telemetry batch on the ingest thread."""
    app = PlainRoutes(
        body_limits=BODY_LIMITS,
        title="Meridian command service",
        version="1",
        description="Accept-fast commands: validate, one idempotent transactional write, 202.",
        # One server span per request (non-recording while no spans are exported, and then
        # cheap), the same code either way; spans around each dependency and serialisation step
        # would cost the accept-fast path more than the work they describe. Logs are JSON lines
        # (observability.py) and no OpenTelemetry meter or logger provider is configured, so
        # FastAPI need not look them up on every request.
        telemetry={"operation_spans": False, "logs": False, "metrics": False},
    )
    install_problem_handlers(app)
    document_credentials(app)
    app.state.deps = deps
    app.state.verifier = verifier
    app.state.workflows = workflows
    app.state.blobs = blobs  # a provider: built on the first POD upload

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    committer = Committer(transactions or Transactions(deps.store))
    app.state.committer = committer

    # The parcel moves and telemetry are the hot paths. Their endpoints read their own inputs, so
    # nothing of FastAPI's per-request machinery is left for them to need: served straight from
    # ASGI (``PlainRoutes.include_direct``, under their own server span). Included first, so that
    # FastAPI's routing too tries them first (every router tried before the match costs each
    # request that takes its path).
    app.include_direct(parcels.moves(deps, committer))
    app.include_direct(telemetry.router(deps, ingest))
    app.include_router(parcels.router(deps))
    app.include_router(dispatch.router())
    app.include_router(schedules.router(scheduler))
    app.include_router(fleet.router())
    app.include_router(webhooks.router())
    app.include_router(pod.router())
    app.include_router(sync.router())
    serve_api_docs(app)
    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.edge.serve import serve
    from services.command.bootstrap import bootstrap

    settings = Settings.from_env()
    serve(create_app(*bootstrap(settings)), settings, "command")


if __name__ == "__main__":
    main()
