"""The WorkflowExecutions contract on every adapter: the embedded engine in-process, the
embedded engine through its HTTP API (``WorkflowsClient`` against ``create_app`` served by uvicorn
on loopback), the Cloud Workflows adapter against the stand-in of Google's client, and the unit
tests' fake."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.workflows import FakeClock, WorkflowEngine
from meridian.embedded.workflows.api import create_app
from meridian.embedded.workflows.client import WorkflowsClient
from meridian.gcp.workflows import CloudWorkflowsExecutions
from meridian.ports import WorkflowExecutions
from tests.fakes import FakeDocumentStore, FakeWorkflows

from .conftest import free_port
from .workflow_executions_contract import OTHER, WAIT_S, WORKFLOW, WorkflowExecutionsContract
from .workflows_stand_in import Clock, StubExecutions, StubSession

HOLD_S = 60
# Creates its callback endpoint, holds (on the engine's clock) until the test releases it, then
# awaits the callback and returns the body it was sent.
HELD = textwrap.dedent(f"""
    main:
      params: [args]
      steps:
        - create: {{call: events.create_callback_endpoint, result: cb}}
        - hold: {{call: sys.sleep, args: {{seconds: {HOLD_S}}}}}
        - wait: {{call: events.await_callback, args: {{callback: '${{cb}}', timeout: 3600}}, result: a}}
        - done: {{return: '${{a.http_request.body}}'}}
""")


class EmbeddedEngine:
    """A real engine on an embedded document store; the clock moves only when released."""

    def __init__(self, data_dir: Path, base_url: str = "http://127.0.0.1:8790") -> None:
        self.clock = FakeClock(auto=False)
        self.store = EmbeddedDocumentStore(data_dir)
        self.engine = WorkflowEngine(self.store, clock=self.clock, base_url=base_url)
        self.engine.register(WORKFLOW, HELD)
        self.engine.register(OTHER, HELD)

    def held_callback_url(self, execution_id: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while self.clock.waiting == 0:  # the hold's sleep: its endpoint exists
            assert time.monotonic() < deadline, "the execution never reached its hold"
            time.sleep(0.005)
        return f"{self.engine.base_url}/v1/callbacks/{execution_id}/cb1"

    def release(self) -> None:
        self.clock.advance(HOLD_S)


class TestWorkflowEngine(WorkflowExecutionsContract):
    @pytest.fixture(autouse=True)
    def _engine(self, tmp_path: Path) -> Iterator[None]:
        self.embedded = EmbeddedEngine(tmp_path)
        self.embedded.engine.open()
        yield
        self.embedded.engine.close()
        self.embedded.store.close()

    def make_executions(self) -> WorkflowExecutions:
        return self.embedded.engine

    def held_callback_url(self, executions: WorkflowExecutions, execution_id: str) -> str:
        return self.embedded.held_callback_url(execution_id)

    def release(self) -> None:
        self.embedded.release()


class TestWorkflowsClient(WorkflowExecutionsContract):
    @pytest.fixture(autouse=True)
    def _served(self, tmp_path: Path) -> Iterator[None]:
        port = free_port()
        self.embedded = EmbeddedEngine(tmp_path, base_url=f"http://127.0.0.1:{port}")
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.embedded.engine), host="127.0.0.1", port=port, log_level="warning"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{port}"
        yield
        server.should_exit = True
        thread.join(WAIT_S)
        self.embedded.store.close()

    def make_executions(self) -> WorkflowExecutions:
        return WorkflowsClient(self.base_url)

    def held_callback_url(self, executions: WorkflowExecutions, execution_id: str) -> str:
        return self.embedded.held_callback_url(execution_id)

    def release(self) -> None:
        self.embedded.release()


PROJECT = "projects/meridian-test/locations/asia-south1/workflows"


class TestCloudWorkflowsExecutions(WorkflowExecutionsContract):
    def make_executions(self) -> WorkflowExecutions:
        return CloudWorkflowsExecutions(
            {WORKFLOW: f"{PROJECT}/meridian-{WORKFLOW}", OTHER: f"{PROJECT}/meridian-{OTHER}"},
            FakeDocumentStore(),
            client=StubExecutions(),
            session=StubSession(),
            clock=Clock(),
            sleep=lambda s: None,
        )

    @pytest.mark.skip(
        reason="keeping a callback that arrives before await_callback is the Cloud Workflows "
        "service's own behaviour; the stand-in of Google's ExecutionsClient runs no workflow, and "
        "the adapter's part (one POST of the body to the URL, answers mapped to the core's "
        "errors) is tested in tests/unit/test_gcp_workflows.py"
    )
    def test_a_callback_sent_before_the_workflow_awaits_it_is_kept(
        self, executions: WorkflowExecutions
    ) -> None:
        raise AssertionError("skipped")


class TestFakeWorkflows(WorkflowExecutionsContract):
    def make_executions(self) -> WorkflowExecutions:
        self.fake = FakeWorkflows(workflows=(WORKFLOW, OTHER))
        return self.fake

    def held_callback_url(self, executions: WorkflowExecutions, execution_id: str) -> str:
        return f"http://workflows.fake/v1/callbacks/{execution_id}/cb1"

    def release(self) -> None:
        self.fake.receive_callbacks()
