"""Connections to the legacy monolith's PostgreSQL: the one module of the bridge that opens them.

On the embedded runtime and in tests, ``MERIDIAN_LEGACY_DSN`` names the server. On Google Cloud,
the Cloud SQL instance is reached by its private IP (no connector: the jobs run on the VPC), as
the user ``MERIDIAN_LEGACY_USER``, with the password from Secret Manager
(``MERIDIAN_LEGACY_PASSWORD_SECRET``, read once per process) or given by value
(``MERIDIAN_LEGACY_PASSWORD``, as Cloud Run puts a secret in the environment).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row

from meridian.config import ConfigError, Settings

Connection = psycopg.Connection[DictRow]  # what ``connect`` gives: rows as dicts

# Every connection says who it is in pg_stat_activity, so an operator can tell the bridge's
# sessions from the monolith's.
APPLICATION_NAME = "meridian-bridge"
CONNECT_TIMEOUT_S = 10


def conninfo(settings: Settings) -> str:
    """The libpq connection string of the monolith's database; ConfigError naming the variable
    when neither MERIDIAN_LEGACY_DSN nor MERIDIAN_LEGACY_HOST is set."""
    legacy = settings.legacy
    if legacy.dsn:
        return make_conninfo(
            legacy.dsn, application_name=APPLICATION_NAME, connect_timeout=CONNECT_TIMEOUT_S
        )
    if not legacy.host:
        raise ConfigError(
            "the migration bridge needs the monolith's PostgreSQL: set MERIDIAN_LEGACY_DSN "
            "(a libpq connection string), or MERIDIAN_LEGACY_HOST and its password's secret "
            "MERIDIAN_LEGACY_PASSWORD_SECRET on Google Cloud"
        )
    return make_conninfo(
        host=legacy.host,
        port=legacy.port,
        dbname=legacy.database,
        user=legacy.user,
        password=_password(settings),
        sslmode="require" if settings.backend == "gcp" else "prefer",
        application_name=APPLICATION_NAME,
        connect_timeout=CONNECT_TIMEOUT_S,
    )


def _password(settings: Settings) -> str:
    legacy = settings.legacy
    if legacy.password:
        return legacy.password
    if not legacy.password_secret:
        raise ConfigError(
            "MERIDIAN_LEGACY_PASSWORD_SECRET (or MERIDIAN_LEGACY_PASSWORD) must be set with "
            "MERIDIAN_LEGACY_HOST: the bridge user's password"
        )
    return _secret(settings.project, legacy.password_secret)


@functools.cache
def _secret(project: str, name: str) -> str:
    from meridian.gcp.external import secret

    return secret(project, name)


@contextmanager
def connect(settings: Settings, *, autocommit: bool = False) -> Iterator[Connection]:
    """A connection whose rows are dicts; closed on exit (committed if the block succeeded)."""
    with psycopg.connect(conninfo(settings), autocommit=autocommit, row_factory=dict_row) as conn:
        yield conn


def as_meridian(conn: psycopg.Connection[Any]) -> None:
    """Mark the current transaction's writes as the bridge's (``written_by = 'meridian'``), so the
    pull does not bring them back into Meridian (``services.sync.entities`` says why)."""
    conn.execute("SELECT set_config('meridian.origin', 'meridian', true)")
