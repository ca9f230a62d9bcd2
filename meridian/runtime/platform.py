"""The platform process: the embedded stand-in for Google's managed side.

It runs what Google runs for us in production: Pub/Sub push delivery (with OIDC tokens), the
BigQuery-subscription sink into the warehouse, and the Pub/Sub gRPC API for official clients
(``PUBSUB_EMULATOR_HOST``). The Eventarc emulation, the Workflows engine and Cloud Scheduler's
jobs (``meridian.embedded.scheduler``) attach here too, each in its own module, and sign their
tokens as the platform identities of ``Settings``. It also answers for the runtime as a whole:
health and the topology it serves.

Its document stores (``meridian.embedded.docstore.stores``): the Workflows engine writes the
``platform`` store; Eventarc tails the command's store read-only, with its cursors in
``<data_dir>/eventarc.sqlite3``; Firestore's TTL service sweeps every store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from meridian.adapters import TTL_FIELDS
from meridian.catalog import PLATFORM, Catalog, PushDelivery, load_catalog
from meridian.config import Settings, environment
from meridian.documents.ownership import Ownership
from meridian.edge.problems import install_problem_handlers
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.docstore.changelog import Cursors
from meridian.embedded.docstore.stores import ServiceStores, migrate_legacy, open_store
from meridian.embedded.eventarc import CURSORS_FILE, EventarcEmulation, tailed_store, transport_name
from meridian.embedded.eventarc_workflows import WorkflowTriggers
from meridian.embedded.oidc import TokenIssuer
from meridian.embedded.pubsub.bigquery import BigQuerySink
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy
from meridian.embedded.pubsub.grpc_server import serve as serve_grpc
from meridian.embedded.pubsub.push import PushDispatcher
from meridian.embedded.scheduler import call_on_schedule, run_job_on_schedule
from meridian.embedded.warehouse import EmbeddedWarehouse
from meridian.embedded.workflows import WorkflowEngine
from meridian.embedded.workflows.api import create_router as workflows_router
from meridian.embedded.workflows.cloud_run import ProcessJobRunner
from meridian.observability import get_logger
from meridian.resources import workflows_directory
from meridian.runtime.supervisor import local_catalog
from services.command.routes.schedules import FIRE_AUDIENCE, FIRE_PATH
from services.reactors.eta.schedule import SLA_TICK_PATH

log = get_logger(__name__)


def push_endpoint(settings: Settings) -> Any:
    return lambda service, path: f"{settings.url_of(service)}{path}"


def job_runner(catalog: Catalog, settings: Settings) -> ProcessJobRunner:
    """Cloud Run Jobs as processes: ``meridian job run NAME ARGS`` with this process's
    environment (the runtime's settings), for the catalog's jobs only; output in
    ``<data_dir>/logs/jobs/<execution>.log``."""
    inherited = {k: v for k, v in environment().items() if k not in ("PORT", "MERIDIAN_SERVICE")}
    return ProcessJobRunner(
        [sys.executable, "-m", "meridian.runtime.cli", "job", "run"],
        known=catalog.jobs,
        env={**inherited, "MERIDIAN_DATA_DIR": str(settings.data_dir.resolve())},
        log_dir=settings.data_dir / "logs" / "jobs",
    )


def prepare_data_dir(catalog: Catalog, settings: Settings) -> None:
    """Create the catalog's topics, subscriptions and document stores before any service starts,
    as a Terraform apply precedes a deploy, so no service ever publishes to a topic that does not
    exist yet; a data directory from before the stores were split is migrated first."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ownership = Ownership.of(catalog)
    triggers = [transport_name(name) for name in catalog.triggers]
    if migrate_legacy(settings.data_dir, ownership, tailed_store(catalog), triggers):
        log.info("document store migrated to one database per store", data_dir=settings.data_dir)
    for name in sorted(ownership.stores):
        open_store(settings.data_dir, name, ttl_fields=TTL_FIELDS).close()
    Broker(settings.data_dir, project=settings.project).apply_catalog(
        local_catalog(catalog, settings), push_endpoint(settings), settings.push_identity
    )


async def _expire_documents(stores: list[EmbeddedDocumentStore], every: float) -> None:
    """Firestore's TTL service: delete expired ledger entries (as normal deletes) in every store,
    and prune each change log past its retention, ``every`` seconds
    (``Settings.embedded.ttl_sweep_s``, a minute by default). An idle look takes no lock."""
    while True:
        for store in stores:
            deleted = await asyncio.to_thread(store.sweep_expired)
            await asyncio.to_thread(store.changes.prune)
            if deleted:
                log.info("expired documents deleted", count=deleted, store=store.file.stem)
        await asyncio.sleep(every)


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
        "pubsub_emulator_host": f"{settings.host}:{settings.port_of('pubsub-grpc')}",
    }


def create_app(catalog: Catalog, settings: Settings) -> FastAPI:
    broker = Broker(settings.data_dir, project=settings.project)
    # The Workflows engine runs workflows/*.yaml (packaged, meridian.resources) durably in the
    # document store; its executions and callbacks API is served at the platform's URL, so
    # callback URLs point here.
    # A restarted platform resumes every ACTIVE execution when the engine opens.
    engine = WorkflowEngine(
        ServiceStores(settings.data_dir, Ownership.of(catalog), PLATFORM, ttl_fields=TTL_FIELDS),
        base_url=settings.url_of("platform"),
        env={
            "DISPATCH_STEPS_URL": settings.url_of("dispatch"),
            "MERIDIAN_SYNC_READY_TIMEOUT_S": f"{settings.embedded.sync_ready_timeout_s:g}",
        },
        # workflows/sync.yaml's jobs (the Cloud Run Admin API connector), run as processes
        jobs=(jobs := job_runner(catalog, settings)),
        project=settings.project,
        # calls with ``auth: {type: OIDC}`` carry a token signed as the workflow's identity
        oidc_token=functools.partial(
            TokenIssuer(settings.data_dir).token, email=settings.workflow_identity
        ),
    )
    engine.register_directory(settings.embedded.workflows_dir or workflows_directory())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        broker.apply_catalog(
            local_catalog(catalog, settings), push_endpoint(settings), settings.push_identity
        )
        pusher = PushDispatcher(broker, TokenIssuer(settings.data_dir))
        sink = BigQuerySink(broker, EmbeddedWarehouse(settings.data_dir))
        grpc_server, grpc_port = serve_grpc(broker, settings.host, settings.port_of("pubsub-grpc"))
        swept = [
            open_store(settings.data_dir, name, ttl_fields=TTL_FIELDS)
            for name in sorted(Ownership.of(catalog).stores)
        ]
        retry = RetryPolicy(
            settings.embedded.eventarc_min_backoff_s, settings.embedded.eventarc_max_backoff_s
        )
        eventarc = EventarcEmulation(
            catalog,
            open_store(settings.data_dir, tailed_store(catalog), read_only=True),
            broker,
            TokenIssuer(settings.data_dir),
            push_endpoint(settings),
            retry,
            identity=settings.eventarc_identity,
            cursors=Cursors(settings.data_dir / CURSORS_FILE),
        )
        tasks = [
            asyncio.create_task(pusher.run()),
            asyncio.create_task(sink.run()),
            asyncio.create_task(eventarc.run()),
            # Cloud Scheduler's job: the ETA reactor's SLA check, so a window closing with no
            # movement on its route is still announced (terraform: the same job in GCP).
            asyncio.create_task(
                call_on_schedule(
                    (tick := f"{settings.url_of('eta')}{SLA_TICK_PATH}"),
                    functools.partial(
                        TokenIssuer(settings.data_dir).token,
                        tick,
                        settings.scheduler_identity,
                    ),
                    settings.embedded.sla_tick_s,
                )
            ),
            # Cloud Scheduler's job firing the dispatch schedules (terraform: schedules.tf).
            asyncio.create_task(
                call_on_schedule(
                    f"{settings.url_of('command')}{FIRE_PATH}",
                    functools.partial(
                        TokenIssuer(settings.data_dir).token,
                        FIRE_AUDIENCE,
                        settings.scheduler_identity,
                    ),
                    settings.embedded.schedule_fire_s,
                )
            ),
            # Cloud Scheduler's jobs starting catalog jobs (terraform: sync.tf), when the legacy
            # monolith is configured: the migration bridge's pull, every minute.
            *(
                asyncio.create_task(
                    run_job_on_schedule(
                        jobs, name, settings.embedded.sync_pull_s, spec.timeout, first_after_s=1
                    )
                )
                for name, spec in catalog.jobs.items()
                if spec.schedule and settings.legacy.dsn
            ),
            asyncio.create_task(_expire_documents(swept, settings.embedded.ttl_sweep_s)),
        ]
        await asyncio.to_thread(engine.open)
        # Eventarc's Pub/Sub triggers into workflows, once the engine takes executions
        workflow_triggers = WorkflowTriggers(catalog, broker, engine, retry)
        tasks.append(asyncio.create_task(workflow_triggers.run()))
        log.info("platform started", pubsub_grpc=f"{settings.host}:{grpc_port}")
        try:
            yield
        finally:
            await asyncio.to_thread(engine.close)
            pusher.stop()
            sink.stop()
            eventarc.stop()
            for task in tasks[3:]:  # the scheduler's jobs and the TTL sweep
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            grpc_server.stop(grace=1)

    app = FastAPI(title="Meridian embedded platform", version="1", lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(workflows_router(engine))
    served = topology(catalog, settings)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/topology")
    def get_topology() -> dict[str, Any]:
        return served

    @app.get("/v1/subscriptions/{name}/metrics")
    def subscription_metrics(name: str) -> dict[str, Any]:
        return dataclasses.asdict(broker.metrics(name))

    return app


def main() -> None:
    from meridian.edge.serve import serve

    settings = Settings.from_env()
    serve(create_app(load_catalog(), settings), settings, "platform")


if __name__ == "__main__":
    main()
