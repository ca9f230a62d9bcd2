"""The live-map service: the debounced position writer (a background task), the customer tracking
stream, the dispatchers' fleet stream, and the two map pages; a process runs the writer, the
streams and pages, or both (its role, see ``bootstrap.MapOptions``).

Entrypoint only: it authenticates, opens a stream from ``tracking`` and frames it as Server-Sent
Events. Tokens come in an ``Authorization: Bearer`` header (the pages send it with ``fetch``) or,
for plain ``EventSource`` clients that cannot set headers, a ``token`` query parameter. The pages
and their assets are public; the streams answer 401 to a caller without a token. Its routes take
no body: anything over the default body limit (``meridian.edge.body_limits``) is refused unread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from meridian.app.auth import bearer_token
from meridian.domain.errors import NotFound, Unauthenticated
from meridian.edge.api_docs import serve_api_docs
from meridian.edge.fast_routes import PlainRoutes
from meridian.edge.problems import install_problem_handlers, problem, problem_responses
from meridian.resources import package_directory
from services.live_map.bootstrap import LiveMap
from services.live_map.tracking import (
    MapEvent,
    TrackingEnded,
    open_tracking,
    track_fleet,
    track_parcel,
)

# The pages and the vendored Leaflet (static/leaflet/, with its licence): package data.
STATIC = package_directory("services.live_map", "static")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _bearer(authorization: str | None, token: str | None) -> str | None:
    return bearer_token(authorization) if authorization else token


async def _sse(events: AsyncIterator[MapEvent]) -> AsyncIterator[bytes]:
    # Starlette cancels this generator when the client goes away, which closes the listeners.
    yield b"retry: 2000\n\n"
    async for event in events:
        if event.kind == "keepalive":
            yield b": keepalive\n\n"
            continue
        yield f"event: {event.kind}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n".encode()


def _page(name: str, live_map: LiveMap) -> HTMLResponse:
    config = {
        "tileUrl": live_map.options.tile_url,
        "tileAttribution": live_map.options.tile_attribution,
    }
    html = (STATIC / name).read_text().replace("__MAP_CONFIG__", json.dumps(config))
    return HTMLResponse(
        html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def create_app(live_map: LiveMap) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(live_map.writer.run()) if live_map.writer else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    app = PlainRoutes(
        title="Meridian live map",
        version="1",
        description="Vehicle positions pushed to customers and dispatchers as Server-Sent Events.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok", "role": live_map.options.role}
        if live_map.writer is not None:
            stats = live_map.writer.stats
            body["writer"] = {
                "consumed": stats.consumed,
                "dropped": stats.dropped,
                "undecodable": stats.undecodable,
                "written": stats.written,
                "commits": stats.commits,
                "failed_commits": stats.failed_commits,
                "pending": live_map.writer.debouncer.pending_count(),
            }
        return body

    if live_map.options.serves_streams:
        _serve_streams(app, live_map)
    serve_api_docs(app)
    return app


def _serve_streams(app: FastAPI, live_map: LiveMap) -> None:
    @app.exception_handler(TrackingEnded)
    async def ended(_: Request, error: TrackingEnded) -> JSONResponse:
        return problem(410, "tracking-ended", str(error), final_status=error.status)

    @app.get(
        "/v1/track/{parcel_id}",
        tags=["tracking"],
        responses=problem_responses(401, 403, 404, 410, 422, 503),
    )
    async def track(
        parcel_id: str,
        authorization: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query()] = None,
    ) -> StreamingResponse:
        """The customer's stream of the parcel's vehicle and status (text/event-stream)."""
        deps = live_map.tracking
        grant = await run_in_threadpool(
            open_tracking, parcel_id, _bearer(authorization, token), deps
        )
        stream = _sse(track_parcel(parcel_id, grant, deps))
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    @app.get("/v1/fleet/stream", tags=["tracking"], responses=problem_responses(401, 403, 422, 503))
    async def fleet(
        authorization: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query()] = None,
    ) -> StreamingResponse:
        """Every vehicle's position, for dispatchers (text/event-stream)."""
        bearer = _bearer(authorization, token)
        if not bearer:
            raise Unauthenticated("a dispatcher's bearer token is required")
        live_map.verifier.verify(bearer).require("dispatcher")
        stream = _sse(track_fleet(live_map.tracking.store))
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    @app.get("/map", include_in_schema=False)
    async def customer_page() -> HTMLResponse:
        return _page("map.html", live_map)

    @app.get("/dispatch", include_in_schema=False)
    async def dispatch_page() -> HTMLResponse:
        return _page("dispatch.html", live_map)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return _file(STATIC, name)

    @app.get("/assets/leaflet/{name:path}", include_in_schema=False)
    async def leaflet(name: str) -> Response:
        return _file(live_map.options.leaflet_dir, name)


def _file(folder: Path, name: str) -> FileResponse:
    root = folder.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"no asset {name}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=300"})


def main() -> None:
    from meridian.config import Settings, environment
    from meridian.edge.serve import serve
    from services.live_map.bootstrap import MapOptions, bootstrap

    env = environment()
    settings = Settings.from_env(env)
    options = MapOptions.from_env(env)
    name = "live-map-writer" if options.role == "writer" else "live-map"
    serve(create_app(bootstrap(settings, options)), settings, name)


if __name__ == "__main__":
    main()
