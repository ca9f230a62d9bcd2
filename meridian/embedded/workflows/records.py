"""How executions, their step history and their callbacks are laid out in the DocumentStore.

``workflow_executions/{id}``            the execution: state, result/error, and the interpreter's
                                        state tree (as JSON text, so bytes and nested lists keep)
                                        with each parallel branch replaced by ``{"$branch": key}``
``workflow_executions/{id}/branches/{key}`` one parallel branch's record, as JSON text likewise
``workflow_executions/{id}/steps/{n}``  one document per finished step, for the step history
``workflow_executions/{id}/callbacks/{c}`` a callback endpoint and the requests it received
``workflow_revisions/{name}-{sha}``     the source each execution runs, pinned at start
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from meridian.ports import Execution

from .expressions import PredicateRef

EXECUTIONS = "workflow_executions"
REVISIONS = "workflow_revisions"


def execution_path(execution_id: str) -> str:
    return f"{EXECUTIONS}/{execution_id}"


def step_path(execution_id: str, seq: int) -> str:
    return f"{EXECUTIONS}/{execution_id}/steps/{seq:09d}"


def steps_collection(execution_id: str) -> str:
    return f"{EXECUTIONS}/{execution_id}/steps"


def branch_path(execution_id: str, key: str) -> str:
    return f"{EXECUTIONS}/{execution_id}/branches/{key}"


def branches_collection(execution_id: str) -> str:
    return f"{EXECUTIONS}/{execution_id}/branches"


def callback_path(execution_id: str, callback_id: str) -> str:
    return f"{EXECUTIONS}/{execution_id}/callbacks/{callback_id}"


def revision_id(workflow: str, source: str) -> str:
    return f"{workflow}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def encode_value(value: Any) -> Any:
    """JSON for what json cannot write itself (the ``default`` of ``json.dumps``)."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, PredicateRef):
        return {"$predicate": value.name, "builtin": value.builtin}
    raise TypeError(f"cannot store {type(value).__name__}")


def decode_object(obj: dict[str, Any]) -> Any:
    """The inverse of ``encode_value`` (the ``object_hook`` of ``json.loads``)."""
    if len(obj) == 1 and "$bytes" in obj:
        return base64.b64decode(obj["$bytes"])
    if len(obj) == 2 and "$predicate" in obj and "builtin" in obj:
        return PredicateRef(obj["$predicate"], obj["builtin"])
    return obj


def dump_state(state: Any) -> str:
    return json.dumps(state, default=encode_value, separators=(",", ":"))


def load_state(text: str) -> Any:
    return json.loads(text, object_hook=decode_object)


def plain(value: Any) -> Any:
    """A value as JSON data for results and API answers (bytes become base64 text)."""
    return json.loads(dump_state(value))


def timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def iso(seconds: float | None) -> str | None:
    moment = timestamp(seconds)
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def to_execution(data: dict[str, Any]) -> Execution:
    return Execution(
        execution_id=data["execution_id"],
        workflow=data["workflow"],
        state=data["state"],
        argument=data.get("argument") or {},
        start_time=timestamp(data["start_time"]) or datetime.now(UTC),
        end_time=timestamp(data.get("end_time")),
        result=load_state(data["result"]) if data.get("result") is not None else None,
        error=data.get("error"),
    )


def error_payload(value: Any, context: str, stack: list[dict[str, Any]]) -> dict[str, Any]:
    """Workflow Executions' ``Error`` shape: payload (JSON text), context, stack trace."""
    return {
        "payload": json.dumps(plain(value)),
        "context": context,
        "stack_trace": {"elements": stack},
    }
