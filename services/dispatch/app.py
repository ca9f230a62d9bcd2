"""The dispatch saga's step service: one idempotent POST per step, called by the workflow.

Entrypoint only: authenticate the caller first (only the dispatch workflow's identity may call, its
OIDC token's audience the step's URL, as Cloud Workflows signs it: 401 without a token or with one
that does not verify, 403 for another identity), then parse the JSON body into the step's command
(a bad body is a 422 naming every field in error) and the ``Idempotency-Key`` header, run the step,
map the core's errors to problem details (Unavailable → 503, which the workflow's retry policy
retries). A body over ``BODY_LIMITS`` is refused (413) before it is read.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from starlette.concurrency import run_in_threadpool

from meridian.domain.errors import DecodeError, NotFound
from meridian.edge.api_docs import serve_api_docs
from meridian.edge.body_limits import MIB, BodyLimits
from meridian.edge.fast_routes import PlainRoutes
from meridian.edge.problems import install_problem_handlers, problem_responses
from meridian.ports import PushAuthenticator
from services.dispatch import steps
from services.dispatch.handlers import Deps

# A step's body is a command of a few fields; the longest, offer_routes, lists a window's routes
# with their callback URLs (a few hundred bytes each): a thousand routes fit.
BODY_LIMITS = BodyLimits(default=1 * MIB)


def create_app(deps: Deps, auth: PushAuthenticator, own_url: str) -> FastAPI:
    """``own_url``: the service's base URL; a step's token is for ``{own_url}/v1/steps/{step}``."""
    app = PlainRoutes(
        title="Meridian dispatch steps",
        version="1",
        description="The steps of workflows/dispatch.yaml: reserve, optimize, assign, offer, "
        "confirm, decline, release, requeue, complete, fail.",
        body_limits=BODY_LIMITS,
    )
    install_problem_handlers(app)
    app.state.deps = deps

    def the_workflow(request: Request) -> None:
        # A dependency: FastAPI runs it before it checks the path and header parameters.
        auth.check(request.headers.get("authorization"), f"{own_url}{request.scope['path']}")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/steps/{step}",
        tags=["saga"],
        dependencies=[Depends(the_workflow)],
        # 404 an unknown step; a step's own errors as the core's map (409 a conflict).
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503),
    )
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

    serve_api_docs(app)
    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.edge.serve import serve
    from services.dispatch.bootstrap import bootstrap

    settings = Settings.from_env()
    serve(create_app(*bootstrap(settings)), settings, "dispatch")


if __name__ == "__main__":
    main()
