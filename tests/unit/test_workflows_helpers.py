"""Shared helpers for the workflow engine tests (no tests here)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meridian.embedded.workflows import FakeClock, HttpResponse, TransportError, WorkflowEngine
from meridian.ports import DocumentStore, Execution
from tests.fakes import FakeDocumentStore


@dataclass
class FakeTransport:
    """Answers HTTP calls from a handler or a queue of canned answers; records every request."""

    answers: list[HttpResponse | TransportError] = field(default_factory=list)
    handler: Callable[[str, str, dict[str, str], Any], HttpResponse] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        decoded = json.loads(body) if body else None
        self.requests.append(
            {"method": method, "url": url, "headers": headers, "body": decoded, "timeout": timeout}
        )
        if self.handler is not None:
            return self.handler(method, url, headers, decoded)
        answer = self.answers.pop(0) if self.answers else ok({})
        if isinstance(answer, TransportError):
            raise answer
        return answer


def ok(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())


def status(code: int) -> HttpResponse:
    return HttpResponse(code, {"content-type": "text/plain"}, b"nope")


def make_engine(
    store: DocumentStore | None = None,
    transport: FakeTransport | None = None,
    clock: FakeClock | None = None,
    env: dict[str, str] | None = None,
) -> WorkflowEngine:
    return WorkflowEngine(
        store or FakeDocumentStore(),
        transport=transport or FakeTransport(),
        clock=clock or FakeClock(),
        env=env or {},
        base_url="http://127.0.0.1:8790",
    )


def run(source: str, argument: Any = None, **kwargs: Any) -> Execution:
    """Run a workflow to its end on a fresh engine and return the finished execution."""
    engine = make_engine(**kwargs)
    engine.register("wf", textwrap.dedent(source))
    with engine:
        execution = engine.start("wf", argument if argument is not None else {})
        return engine.wait(execution.execution_id, timeout=20)


def error_of(execution: Execution) -> Any:
    assert execution.state == "FAILED", execution
    assert execution.error is not None
    return json.loads(execution.error["payload"])
