"""The API's documentation pages, served from the package, no CDN: Swagger UI at ``/docs``,
ReDoc at ``/redoc``.

FastAPI's own ``/docs`` and ``/redoc`` load their scripts from a CDN, so offline, or behind an
egress that allows only Google's APIs, they are blank pages. Every service's app
(``meridian.edge.fast_routes.PlainRoutes``) therefore starts without them, and a service mounts
its documentation with ``serve_api_docs``: FastAPI's Swagger UI page for the app's OpenAPI
document, its script, style and icon served from ``static/swagger/`` beside this module.

Those files are npm's ``swagger-ui-dist``, pinned exactly in package.json and committed with
their licences (the image carries no node_modules); after a version bump
``python -m meridian.edge.api_docs`` copies them again from node_modules
(``tests/unit/test_api_docs.py`` fails while they differ). ReDoc is its one self-contained
``bundles/redoc.standalone.js`` (with its licences) from npm's ``redoc`` package, taken from the
package's tarball alone (``npm pack redoc@REDOC_VERSION``): installing the package would bring about
a hundred others (React among them) that the standalone bundle already contains;
``python -m meridian.edge.api_docs --redoc DIR`` copies them from the unpacked tarball.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from meridian.resources import package_directory

SWAGGER_UI = package_directory("meridian.edge", "static", "swagger")
# What the page loads, and the licences that come with it (the bundle's third-party notices).
VENDORED = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
    "LICENSE",
    "NOTICE",
    "swagger-ui-bundle.js.LICENSE.txt",
)
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
REDOC = package_directory("meridian.edge", "static", "redoc")
REDOC_VERSION = "2.5.4"
REDOC_VENDORED = ("redoc.standalone.js", "redoc.standalone.js.LICENSE.txt", "LICENSE")
REDOC_PATH = "/redoc"
REDOC_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:"
)
REDOC_ASSETS_PATH = "/redoc/assets"


def serve_api_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` and ReDoc at ``/redoc`` for ``app``'s OpenAPI document,
    assets included."""
    if app.openapi_url is None:
        raise ValueError("the app has no OpenAPI document to show")
    openapi_url = app.openapi_url
    app.mount(ASSETS_PATH, StaticFiles(directory=SWAGGER_UI), name="swagger-ui")
    app.mount(REDOC_ASSETS_PATH, StaticFiles(directory=REDOC), name="redoc")

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{REDOC_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            with_google_fonts=False,
        )
        # ReDoc's footer shows its logo from its own CDN; the page keeps to this origin.
        page.headers["content-security-policy"] = REDOC_POLICY
        return page

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # Relative to where a proxy mounts the service, as FastAPI's own page does it.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            # Swagger UI would otherwise send the document to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )


def refresh(source: Path, target: Path = SWAGGER_UI) -> None:
    """Copy the vendored files from an installed ``swagger-ui-dist`` (node_modules)."""
    missing = [name for name in VENDORED if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: run `make node` first")
    target.mkdir(parents=True, exist_ok=True)
    for name in VENDORED:
        shutil.copyfile(source / name, target / name)


def refresh_redoc(package: Path, target: Path = REDOC) -> None:
    """Copy ReDoc's standalone bundle and licences from an unpacked ``npm pack`` tarball
    (``package/``: ``bundles/`` and ``LICENSE``)."""
    sources = {
        "redoc.standalone.js": package / "bundles" / "redoc.standalone.js",
        "redoc.standalone.js.LICENSE.txt": package / "bundles" / "redoc.standalone.js.LICENSE.txt",
        "LICENSE": package / "LICENSE",
    }
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"not in the unpacked tarball: {', '.join(missing)}")
    target.mkdir(parents=True, exist_ok=True)
    for name, path in sources.items():
        shutil.copyfile(path, target / name)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--redoc"]:
        refresh_redoc(Path(sys.argv[2]))
        print(f"ReDoc copied into {REDOC}")
    else:
        refresh(Path(sys.argv[1] if len(sys.argv) > 1 else "node_modules/swagger-ui-dist"))
        print(f"Swagger UI copied into {SWAGGER_UI}")
