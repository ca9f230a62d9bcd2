# The one service image: every Cloud Run service of the catalog (schemas/catalog.yaml, its
# services section) runs from it, chosen by its one argument: `meridian serve SERVICE`
# (ENTRYPOINT below; terraform/ gives each service its name as the argument). The service listens
# on $PORT, on every interface since Cloud Run sets K_SERVICE, and stops cleanly on SIGTERM
# (meridian/edge/serve.py).
#
# No Docker engine runs where the tests run, so the tests run what this image runs, the same way:
# tests/e2e/test_installed_wheel.py builds the wheel, installs it with the locked dependencies
# (no dev group, no pipeline extra, as here) into a fresh environment outside the checkout, and
# runs `meridian serve command` with PORT set, as this image's entrypoint does;
# tests/e2e/test_serve_sigterm.py stops a served service with SIGTERM and checks it exits 0 in
# time. `make lint` runs hadolint on this file.
#
#   docker build -t meridian .            then: docker run -e PORT=8080 -p 8080:8080 meridian eta

# Both stages use the same Python, at the same path: the environment built in the first is copied
# into the second as it is.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# uv at the Makefile's UV_VERSION, from PyPI.
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/meridian
WORKDIR /src
# The dependencies first, from the lock alone, so this layer is rebuilt only when uv.lock changes.
# Neither the dev group nor the pipeline extra: the services do not run Beam.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
# Then the project itself, built as a wheel and installed (not editable): the catalog, the Avro
# schemas, the workflows and the live map's assets come with it as package data.
COPY . .
RUN uv sync --locked --no-dev --no-editable

FROM ${PYTHON_IMAGE}
# A user of its own, by number so that the runtime can tell it is not root.
RUN groupadd --system --gid 10001 meridian \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/meridian meridian
COPY --from=builder /opt/meridian /opt/meridian
ENV PATH=/opt/meridian/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080
USER 10001:10001
WORKDIR /home/meridian
EXPOSE 8080
ENTRYPOINT ["meridian", "serve"]
CMD ["command"]
