"""What the embedded third-party stand-ins share: a durable record of what they accepted, keyed by
the caller's idempotency key, and injectable latency and failures (set by environment at start or
by ``PUT /v1/config`` while running, so a test can slow a gateway down and bring it back).

Their one busy endpoint each (send an SMS, post a charge) is a plain route
(``meridian.edge.fast_routes``): they run on the same cores as the services under test, and
FastAPI's request machinery was four fifths of the fake SMS gateway's CPU per message.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic
from fastapi import FastAPI
from pydantic import BaseModel, Field

from meridian.config import Faults
from meridian.domain.errors import FieldError, ValidationError
from meridian.edge.fast_routes import PlainRequest

Model = TypeVar("Model", bound=BaseModel)


class FaultConfig(BaseModel):
    latency_s: float = Field(default=0.0, ge=0, le=120)
    failure_rate: float = Field(default=0.0, ge=0, le=1)


@dataclass
class Accepted:
    record_id: str
    created: bool
    payload: dict[str, Any]


class Ledger:
    """Records keyed by idempotency key in ``<data_dir>/external/<name>.sqlite``."""

    def __init__(self, data_dir: Path, name: str) -> None:
        path = data_dir / "external" / f"{name}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Survives a crash of the process, not of the machine: enough for a stand-in, and no
        # fsync per message holding up its event loop.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, id TEXT NOT NULL,"
            " payload TEXT NOT NULL, at REAL NOT NULL)"
        )
        self._lock = threading.Lock()

    def accept(self, key: str, payload: dict[str, Any], prefix: str) -> Accepted:
        """Record ``payload`` under ``key`` unless the key was already used (then the first one)."""
        with self._lock:
            record_id = f"{prefix}_{uuid.uuid4().hex[:20]}"
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?)",
                (key, record_id, json.dumps(payload), time.time()),
            )
            row = self._db.execute(
                "SELECT id, payload FROM records WHERE key = ?", (key,)
            ).fetchone()
        return Accepted(row[0], cursor.rowcount == 1, json.loads(row[1]))

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, id, payload, at FROM records ORDER BY at"
            ).fetchall()
        return [{"idempotency_key": k, "id": i, **json.loads(p), "at": a} for k, i, p, a in rows]


def idempotent_request(model: type[Model], request: PlainRequest) -> tuple[Model, str]:
    """The JSON body of ``request`` as ``model`` and its ``Idempotency-Key`` header (1 to 255
    characters); ValidationError (422) listing what is wrong otherwise."""
    errors: list[FieldError] = []
    key = request.headers.get("idempotency-key", "")
    if not 1 <= len(key) <= 255:
        errors.append(FieldError("header.idempotency-key", "1 to 255 characters required"))
    try:
        body = model.model_validate_json(request.body)
    except pydantic.ValidationError as e:
        errors += [
            FieldError(".".join(str(p) for p in ("body", *error["loc"])), error["msg"])
            for error in e.errors()
        ]
    if errors:
        raise ValidationError("invalid request", errors)
    return body, key


def fault_config(faults: Faults) -> FaultConfig:
    """The faults a stand-in injects from its start (``Settings.embedded``: MERIDIAN_SMS_* or
    MERIDIAN_BILLING_* ``LATENCY_S`` and ``FAILURE_RATE``)."""
    return FaultConfig(latency_s=faults.latency_s, failure_rate=faults.failure_rate)


def install_fault_routes(
    app: FastAPI, config: Callable[[], FaultConfig], set_config: Callable[[FaultConfig], None]
) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/config")
    async def get_config() -> FaultConfig:
        return config()

    @app.put("/v1/config")
    async def put_config(body: FaultConfig) -> FaultConfig:
        set_config(body)
        return body


async def behave(config: FaultConfig) -> bool:
    """Wait the configured latency; False if this call is one of the configured failures."""
    if config.latency_s:
        await asyncio.sleep(config.latency_s)
    return random.random() >= config.failure_rate
