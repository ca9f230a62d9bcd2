"""The ``WorkflowExecutions`` port over the engine's HTTP API, for processes other than the one
running the engine (the command service, the CLI)."""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from meridian.domain.errors import Conflict, NotFound, Unavailable, ValidationError
from meridian.ports import Execution, WorkflowExecutions


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def from_json(body: Mapping[str, Any]) -> Execution:
    start = _parse_time(body.get("startTime"))
    assert start is not None
    return Execution(
        execution_id=body["executionId"],
        workflow=body["workflow"],
        state=body["state"],
        argument=json.loads(body.get("argument") or "{}"),
        start_time=start,
        end_time=_parse_time(body.get("endTime")),
        result=json.loads(body["result"]) if body.get("result") is not None else None,
        error=body.get("error"),
    )


def _detail(response: httpx.Response) -> str:
    """The engine's reason for a refusal (FastAPI's ``{"detail": ...}``), else the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text


class WorkflowsClient(WorkflowExecutions):
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as e:
            raise Unavailable(f"workflows engine at {self.base_url}: {e}") from e
        if response.status_code == 404:
            raise NotFound(_detail(response))
        if response.status_code == 429:
            raise Conflict(_detail(response))
        if response.status_code >= 400:
            raise ValidationError(_detail(response))
        return response.json()

    def start(
        self, workflow: str, argument: Mapping[str, Any], execution_id: str | None = None
    ) -> Execution:
        body: dict[str, Any] = {"argument": json.dumps(dict(argument))}
        if execution_id:
            body["executionId"] = execution_id
        return from_json(self._call("POST", f"/v1/workflows/{workflow}/executions", json=body))

    def get(self, execution_id: str) -> Execution:
        return from_json(self._call("GET", f"/v1/executions/{execution_id}"))

    def list(self, workflow: str, state: str | None = None) -> list[Execution]:
        params = {"workflow": workflow, **({"state": state} if state else {})}
        return [
            from_json(e) for e in self._call("GET", "/v1/executions", params=params)["executions"]
        ]

    def cancel(self, execution_id: str) -> Execution:
        return from_json(self._call("POST", f"/v1/executions/{execution_id}:cancel"))

    def steps(self, execution_id: str) -> builtins.list[dict[str, Any]]:
        steps: builtins.list[dict[str, Any]] = self._call(
            "GET", f"/v1/executions/{execution_id}/steps"
        )["steps"]
        return steps

    def send_callback(self, callback_url: str, body: Mapping[str, Any]) -> None:
        self._call("POST", callback_url, json=dict(body))

    def close(self) -> None:
        self._http.close()
