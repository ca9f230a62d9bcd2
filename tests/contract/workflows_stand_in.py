"""Stand-ins for Google's Workflow Executions client at its method boundary (no network), used
by the Cloud Workflows adapter's unit tests (tests/unit/test_gcp_workflows.py) and its run of the
WorkflowExecutions contract (tests/contract/test_workflow_executions.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as api
from google.cloud.workflows import executions_v1

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

State = executions_v1.Execution.State


class StubExecutions:
    """Stands in for ``ExecutionsClient`` at its method boundary: records each request, serves
    executions it created (or was given), raises what a test queues for a method."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.executions: dict[str, executions_v1.Execution] = {}
        self.failures: dict[str, Exception] = {}
        self.created = 0

    def _record(self, method: str, request: Any) -> None:
        self.requests.append((method, request))
        if method in self.failures:
            raise self.failures.pop(method)

    def create_execution(self, request: Any, timeout: float | None = None) -> Any:
        self._record("create_execution", request)
        self.created += 1
        execution = executions_v1.Execution(
            request.execution,
            name=f"{request.parent}/executions/cloud-{self.created}",
            state=State.ACTIVE,
            start_time=T0,
        )
        self.executions[execution.name] = execution
        return execution

    def get_execution(self, request: Any) -> Any:
        self._record("get_execution", request)
        if request.name not in self.executions:
            raise api.NotFound(f"{request.name} not found")
        return self.executions[request.name]

    def list_executions(self, request: Any) -> Iterator[Any]:
        self._record("list_executions", request)
        found = [e for e in self.executions.values() if e.name.startswith(request.parent + "/")]
        if request.filter.startswith("labels."):
            key, value = request.filter[len("labels.") :].split("=", 1)
            found = [e for e in found if e.labels.get(key) == json.loads(value)]
        elif request.filter.startswith("state="):  # state="A" OR state="B", as the API reads it
            states = re.findall(r'state="([A-Z_]+)"', request.filter)
            found = [e for e in found if e.state.name in states]
        return iter(found)

    def cancel_execution(self, request: Any) -> Any:
        self._record("cancel_execution", request)
        execution = self.executions[request.name]
        if execution.state != State.ACTIVE:
            raise api.FailedPrecondition("execution is not active")
        self.executions[request.name] = executions_v1.Execution(
            execution, state=State.CANCELLED, end_time=T0 + timedelta(minutes=1)
        )
        return self.executions[request.name]


class StubResponse:
    def __init__(self, status_code: int, text: str = "") -> None:
        self.status_code, self.text = status_code, text


class StubSession:
    """An AuthorizedSession: records posts, answers with a queued status (200 by default)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.answers: list[StubResponse | Exception] = []

    def post(self, url: str, json: Any = None, timeout: float | None = None) -> StubResponse:
        self.posts.append((url, json))
        answer = self.answers.pop(0) if self.answers else StubResponse(200)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now
