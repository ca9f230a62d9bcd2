"""The WorkflowExecutions contract: one suite that every adapter must pass
(``meridian.ports.WorkflowExecutions``).

Subclasses provide ``make_executions`` for a backend where ``WORKFLOW`` and ``OTHER`` are deployed
as a workflow that creates a callback endpoint, holds until ``release`` is called, then awaits
that callback and returns its body; and ``held_callback_url`` (the endpoint of an execution that
is holding, not yet awaiting). A hook an adapter's backend cannot provide is the only reason to
skip a test there, with the reason written next to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from meridian.domain.errors import NotFound
from meridian.ports import Execution, WorkflowExecutions

WORKFLOW = "offer"
OTHER = "sync"
WAIT_S = 20.0  # a guard against a hung execution, not a timing assertion


class WorkflowExecutionsContract:
    def make_executions(self) -> WorkflowExecutions:
        raise NotImplementedError

    def held_callback_url(self, executions: WorkflowExecutions, execution_id: str) -> str:
        """The callback endpoint of an execution that has created it and holds before awaiting."""
        raise NotImplementedError

    def release(self) -> None:
        """Let every holding execution go on to await its callback."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _names(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]

    def id(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    @pytest.fixture
    def executions(self) -> Iterator[WorkflowExecutions]:
        executions = self.make_executions()
        yield executions
        close = getattr(executions, "close", None)
        if close is not None:
            close()

    def test_start_returns_the_execution_active(self, executions: WorkflowExecutions) -> None:
        started = executions.start(WORKFLOW, {"window_id": "w-1"}, self.id("e"))

        assert started.state == "ACTIVE"
        assert started.execution_id == self.id("e")
        assert started.workflow == WORKFLOW
        assert started.argument == {"window_id": "w-1"}
        assert started.end_time is None
        assert executions.get(self.id("e")).state == "ACTIVE"

    def test_starting_an_existing_id_returns_that_execution(
        self, executions: WorkflowExecutions
    ) -> None:
        first = executions.start(WORKFLOW, {"window_id": "w-1"}, self.id("e"))
        again = executions.start(WORKFLOW, {"window_id": "w-1", "retry": True}, self.id("e"))

        assert again.execution_id == first.execution_id
        assert again.argument == {"window_id": "w-1"}  # the first start's argument stands
        assert [e.execution_id for e in executions.list(WORKFLOW)].count(self.id("e")) == 1

    def test_starting_an_unknown_workflow_is_not_found(
        self, executions: WorkflowExecutions
    ) -> None:
        with pytest.raises(NotFound):
            executions.start("no-such-workflow", {}, self.id("e"))

    def test_get_of_an_unknown_id_is_not_found(self, executions: WorkflowExecutions) -> None:
        with pytest.raises(NotFound):
            executions.get(self.id("never-started"))

    def test_list_by_workflow_and_state(self, executions: WorkflowExecutions) -> None:
        executions.start(WORKFLOW, {}, self.id("a"))
        executions.start(WORKFLOW, {}, self.id("b"))
        executions.start(OTHER, {}, self.id("other"))
        executions.cancel(self.id("b"))

        def ids(found: list[Execution]) -> set[str]:
            return {e.execution_id for e in found if e.execution_id.endswith(self.suffix)}

        assert ids(executions.list(WORKFLOW)) == {self.id("a"), self.id("b")}
        assert ids(executions.list(WORKFLOW, "ACTIVE")) == {self.id("a")}
        assert ids(executions.list(WORKFLOW, "CANCELLED")) == {self.id("b")}
        assert ids(executions.list(OTHER)) == {self.id("other")}
        assert all(e.workflow == WORKFLOW for e in executions.list(WORKFLOW))

    def test_cancel_ends_an_active_execution_and_reports_an_ended_one(
        self, executions: WorkflowExecutions
    ) -> None:
        executions.start(WORKFLOW, {}, self.id("e"))

        cancelled = executions.cancel(self.id("e"))
        again = executions.cancel(self.id("e"))

        assert cancelled.state == again.state == "CANCELLED"
        assert cancelled.end_time is not None
        got = executions.get(self.id("e"))
        assert got.state == "CANCELLED" and got.end_time is not None

    def test_cancel_of_an_unknown_id_is_not_found(self, executions: WorkflowExecutions) -> None:
        with pytest.raises(NotFound):
            executions.cancel(self.id("never-started"))

    def test_a_callback_sent_before_the_workflow_awaits_it_is_kept(
        self, executions: WorkflowExecutions
    ) -> None:
        executions.start(WORKFLOW, {}, self.id("e"))
        url = self.held_callback_url(executions, self.id("e"))

        executions.send_callback(url, {"decision": "accept"})
        self.release()

        deadline = time.monotonic() + WAIT_S
        while (ended := executions.get(self.id("e"))).state == "ACTIVE":
            assert time.monotonic() < deadline, "the execution never received its callback"
            time.sleep(0.01)
        assert ended.state == "SUCCEEDED", ended
        assert ended.result == {"decision": "accept"}
