"""The embedded Cloud Scheduler: an HTTP job that calls a URL on a fixed period with an OIDC token.

The platform process runs one per job (the ETA reactor's SLA check, the command service's firing
of the dispatch schedules), signing as ``Settings.scheduler_identity``, the identity the job's
target accepts; on Google Cloud the same job is a Cloud Scheduler HTTP job. A catalog job with a
``schedule`` (the migration bridge's ``sync-pull``) is run by ``run_job_on_schedule`` instead:
on Google Cloud, Cloud Scheduler calls the Cloud Run Admin API's ``jobs.run`` for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx

from meridian.embedded.workflows.cloud_run import JobRunner
from meridian.observability import get_logger

log = get_logger(__name__)


async def call_on_schedule(
    url: str, token: Callable[[], str], every_s: float, client: httpx.AsyncClient | None = None
) -> None:
    """What a Cloud Scheduler HTTP job does: ``POST url`` with an OIDC token every ``every_s``
    seconds, forever (cancel to stop). A failed call is logged and the next one comes on schedule,
    as a job without retries does; the target must be idempotent."""
    async with contextlib.AsyncExitStack() as stack:
        http = client
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        while True:
            await asyncio.sleep(every_s)
            try:
                response = await http.post(url, headers={"Authorization": f"Bearer {token()}"})
                if response.status_code >= 300:
                    log.warning("scheduled call refused", url=url, status=response.status_code)
            except httpx.HTTPError as e:
                log.warning("scheduled call failed", url=url, error=str(e))


async def run_job_on_schedule(
    runner: JobRunner, job: str, every_s: float, timeout_s: float, first_after_s: float = 0.0
) -> None:
    """What a Cloud Scheduler job starting a Cloud Run Job does: run ``job`` (no arguments, its
    one task bounded by ``timeout_s``) every ``every_s`` seconds, forever (cancel to stop). A
    failed run is logged and the next comes on schedule; a run longer than the period delays
    the next instead of overlapping it."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(first_after_s)
    while True:
        started = loop.time()
        outcome = await runner.run(job, [], {"CLOUD_RUN_JOB": job}, timeout_s)
        if outcome.exit_code != 0:
            log.warning(
                "scheduled job failed",
                job=job,
                exit_code=outcome.exit_code,
                output=outcome.output_tail[-500:],
            )
        await asyncio.sleep(max(0.0, every_s - (loop.time() - started)))
