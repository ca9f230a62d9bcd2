"""The argument every sync job receives: the Pub/Sub message of a ``SyncRequested`` as the sync
workflow passes it (``workflows/sync.yaml``: ``base64.encode(json.encode(event.data.message))``,
the message of the Eventarc CloudEvent that started the run, with its base64 ``data`` and its
``attributes``), one shell-safe string. The ``sync-report`` job gets the same message inside its
report (``decode_report``)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meridian.codec.events import EventCodec
from meridian.domain.errors import DecodeError
from meridian.domain.events import SyncRequested
from meridian.ports import Message


def encode_argument(message: Message) -> str:
    """What the workflow passes a job for ``message`` (tests and on-demand runs)."""
    return _b64json(pubsub_json(message))


def pubsub_json(message: Message) -> dict[str, Any]:
    """``message`` as Pub/Sub's JSON (and Eventarc's ``data.message``) shows it."""
    return {
        "data": base64.b64encode(message.data).decode(),
        "attributes": dict(message.attributes),
    }


def decode_argument(argument: str, codec: EventCodec) -> SyncRequested:
    """The ``SyncRequested`` a job was given; DecodeError naming what is wrong."""
    return request_of(_unb64json(argument), codec)


def request_of(message: Mapping[str, Any], codec: EventCodec) -> SyncRequested:
    if not isinstance(message, Mapping) or not isinstance(message.get("data"), str):
        raise DecodeError("job argument: not a Pub/Sub message (no base64 data)")
    try:
        data = base64.b64decode(message["data"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise DecodeError(f"job argument: message data is not base64: {e}") from None
    attributes = message.get("attributes") or {}
    event = codec.from_message(data, {str(k): str(v) for k, v in attributes.items()})
    if not isinstance(event, SyncRequested):
        raise DecodeError(f"job argument: a {event.event_type}, not a SyncRequested")
    return event


@dataclass(frozen=True)
class Report:
    """What the workflow asks ``sync-report`` to announce: ``started``, ``ended`` (with the steps
    it ran) or ``error`` (with the step that failed and why)."""

    outcome: str
    request: SyncRequested
    execution_id: str
    step: str = ""
    reason: str = ""
    steps: tuple[str, ...] = field(default=())


def decode_report(argument: str, codec: EventCodec) -> Report:
    raw = _unb64json(argument)
    if not isinstance(raw, dict) or raw.get("outcome") not in ("started", "ended", "error"):
        raise DecodeError("report argument: outcome must be started, ended or error")
    return Report(
        outcome=raw["outcome"],
        request=request_of(raw.get("message") or {}, codec),
        execution_id=str(raw.get("execution_id") or ""),
        step=str(raw.get("step") or ""),
        reason=str(raw.get("reason") or ""),
        steps=tuple(str(s) for s in raw.get("steps") or ()),
    )


def _b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _unb64json(argument: str) -> Any:
    try:
        return json.loads(base64.b64decode(argument, validate=True))
    except (binascii.Error, ValueError) as e:
        raise DecodeError(f"job argument: not base64-encoded JSON: {e}") from None
