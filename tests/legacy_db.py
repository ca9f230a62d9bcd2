"""The legacy monolith's PostgreSQL for tests (#21): a real server from Debian's ``postgresql``
package, started once per test session by pytest-postgresql in a temporary directory, and a fresh
database per test with ``legacy/schema.sql`` applied (cloned from a template, so a test costs a
``CREATE DATABASE``, not the schema's DDL).

``legacy_dsn`` (a libpq connection string) is the fixture tests use; ``legacy_postgres`` is the
session's server. Registered for every test by ``tests/conftest.py``. A missing PostgreSQL fails
the test naming ``make postgres``; it is never skipped.

PostgreSQL refuses to run as root: when the tests do (a container), every ``pg_ctl`` call goes
through a wrapper that runs it as the ``postgres`` user Debian's package creates, and the data
directory is made in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

SCHEMA = Path(__file__).resolve().parents[1] / "legacy" / "schema.sql"
_USER = "postgres"
_counter = itertools.count()


def pg_ctl() -> str:
    """Debian's pg_ctl (off PATH, under /usr/lib/postgresql/<version>/bin), else PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [shutil.which("pg_ctl") or ""]
    if not found[-1]:
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl, no pg_ctl on PATH):"
            " run `make postgres`, which installs Debian's postgresql package",
            pytrace=False,
        )
    return found[-1]


def _as_postgres_user(executable: str, workdir: Path) -> str:
    """A pg_ctl that drops root for the ``postgres`` user (PostgreSQL will not run as root)."""
    wrapper = workdir / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\nexec runuser -u {_USER} -- "{executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(wrapper)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server(prefix: str, options: str) -> Iterator[PostgreSQLExecutor]:
    """A PostgreSQL server in a new temporary directory (named ``prefix``…) with ``options``
    (``postgres -c`` settings), as the ``postgres`` user when run as root; stopped and its
    directory removed on the way out. Used by the session fixture and by the benchmarks."""
    executable = pg_ctl()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(workdir, user=_USER, group=_USER)
        executable = _as_postgres_user(executable, workdir)
    server = PostgreSQLExecutor(
        executable=executable,
        host="127.0.0.1",
        port=_free_port(),
        datadir=str(workdir / "data"),
        unixsocketdir=str(workdir),
        logfile=str(workdir / "postgresql.log"),
        startparams="-w",
        dbname="legacy",
        user=_USER,
        postgres_options=options,
    )
    server.start()
    try:
        yield server
    finally:
        pid_file = workdir / "data" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        server.stop()
        if postmaster is not None:
            _make_sure_it_stopped(postmaster)
        shutil.rmtree(workdir, ignore_errors=True)


def _make_sure_it_stopped(pid: int) -> None:
    """pg_ctl stop through the runuser wrapper has been seen to return with the postmaster still
    running (rarely): a fast shutdown signal, then a kill, so no server is left behind."""
    for sig, wait_s in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@pytest.fixture(scope="session")
def legacy_postgres() -> Iterator[PostgreSQLExecutor]:
    """One PostgreSQL server for the session, its template database holding the legacy schema."""
    # One worker per test database is plenty; keep the shared machine's memory for others.
    options = "-c shared_buffers=32MB -c max_connections=60 -c fsync=off"
    with (
        postgres_server("meridian-legacy-pg-", options) as server,
        DatabaseJanitor(
            user=_USER,
            host=server.host,
            port=server.port,
            dbname=server.template_dbname,
            as_template=True,
            maintenance_dbname=server.maintenance_dbname,
        ) as template,
    ):
        template.load(SCHEMA)
        yield server


@pytest.fixture
def legacy_dsn(legacy_postgres: PostgreSQLExecutor) -> Iterator[str]:
    """A fresh database with legacy/schema.sql applied, dropped after the test."""
    name = f"legacy_{os.getpid()}_{next(_counter)}"
    with DatabaseJanitor(
        user=_USER,
        host=legacy_postgres.host,
        port=legacy_postgres.port,
        dbname=name,
        template_dbname=legacy_postgres.template_dbname,
        maintenance_dbname=legacy_postgres.maintenance_dbname,
    ):
        yield f"host={legacy_postgres.host} port={legacy_postgres.port} dbname={name} user={_USER}"
