# Meridian: every install step lives here. A fresh machine needs Python 3.11+, make, and the
# package registries (PyPI, npm, Debian).
#   make demo    run the whole platform on the embedded runtime, with a scripted scenario
#   make test    run the test suite (unit, contract, integration, e2e)
#   make lint    ruff on everything, mypy (strict) on meridian/, services/ and pipelines/,
#                terraform fmt -check (when terraform is installed), hadolint on the two Dockerfiles
#   make bench   run the benchmarks and rewrite BENCHMARKS.md

PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
DEMO_DURATION ?= 45
PYTEST_ARGS ?=

# Use uv from PATH when present; otherwise install a pinned copy with pip into .tools/.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif

.PHONY: all demo test lint bench clean env node browser redis postgres

all: test

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# The pipeline extra (Beam) too: the tests run the geofence job; the service image leaves it out.
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra pipeline --compile-bytecode --python $(PYTHON)
	@touch $@

env: $(VENV)/.synced

# npm packages (the Firestore emulator for contract tests, map assets), pinned by package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node: $(if $(wildcard package.json),node_modules/.installed)

# Debian's Chromium for the browser tests (map pages, API docs); Redis for the broker benchmark's
# baseline; PostgreSQL for the migration bridge's legacy database (tests and benchmarks start
# their own server in a temporary directory: nothing is configured system-wide).
# scripts/need.sh installs a missing one with apt-get where it can (root, as in CI and the
# project's containers); elsewhere it says what to install and stops.
browser:
	@scripts/need.sh chromium chromium "the browser tests of the map and the API docs"

redis:
	@scripts/need.sh redis-server redis-server "the broker benchmark's baseline"

postgres:
	@scripts/need.sh postgresql '/usr/lib/postgresql/*/bin/pg_ctl' "the migration bridge's legacy database"

demo: env node
	$(VENV)/bin/meridian demo --duration $(DEMO_DURATION)

test: env node browser postgres
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@# Only a missing binary skips (never a failing check).
	@if command -v terraform >/dev/null; then terraform fmt -check -recursive terraform; \
	else echo "terraform not installed: fmt check skipped"; fi
	$(VENV)/bin/hadolint Dockerfile pipelines/geofence/Dockerfile

bench: env node redis postgres
	$(VENV)/bin/python -m loadtest.bench

clean:
	rm -rf $(VENV) .tools .meridian node_modules .pytest_cache .mypy_cache .ruff_cache
