"""The dispatch saga's step service: one idempotent POST per step, called by the workflow.

Entrypoint only: parse the JSON body into the step's command (a bad body is a 422 naming every
field in error) and the ``Idempotency-Key`` header, run the step, map the core's errors to problem
details (Unavailable → 503, which the workflow's retry policy retries).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from starlette.concurrency import run_in_threadpool

from meridian.domain.errors import DecodeError, NotFound
from meridian.edge.problems import install_problem_handlers
from services.dispatch import steps
from services.dispatch.handlers import Deps


def create_app(deps: Deps) -> FastAPI:
    app = FastAPI(
        title="Meridian dispatch steps",
        version="1",
        description="The steps of workflows/dispatch.yaml: reserve, optimize, assign, offer, "
        "confirm, decline, release, requeue, complete, fail.",
    )
    install_problem_handlers(app)
    app.state.deps = deps

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/steps/{step}", tags=["saga"])
    async def run_step(
        step: str,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> dict[str, Any]:
        if step not in steps.STEPS:
            raise NotFound(f"no saga step {step!r}; steps: {', '.join(steps.STEPS)}")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as e:
            raise DecodeError(f"body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise DecodeError("body must be a JSON object")
        command = steps.parse(step, body)
        return await run_in_threadpool(steps.run_step, step, idempotency_key, command, deps)

    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.edge.serve import serve
    from services.dispatch.bootstrap import bootstrap

    settings = Settings.from_env()
    serve(create_app(bootstrap(settings)), settings, "dispatch")


if __name__ == "__main__":
    main()
