"""The Cloud Workflows adapter against a stub ExecutionsClient (the real request and Execution
types, no network; the stand-in, tests/contract/workflows_stand_in.py, also runs the
WorkflowExecutions contract): the requests it builds, idempotent starts through the document
store, state, result and error mapping, callbacks by URL, and Google API errors as the core's
errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from google.api_core import exceptions as api
from google.cloud.workflows import executions_v1

from meridian import adapters
from meridian.config import Settings
from meridian.domain.errors import (
    Conflict,
    MeridianError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from meridian.gcp.workflows import CloudWorkflowsExecutions, label_value, start_path
from tests.contract.workflows_stand_in import T0, Clock, StubExecutions, StubResponse, StubSession
from tests.fakes import FakeDocumentStore

PARENT = "projects/meridian-prod/locations/asia-south1/workflows/meridian-dispatch"

State = executions_v1.Execution.State


@pytest.fixture
def stub() -> StubExecutions:
    return StubExecutions()


@pytest.fixture
def store() -> FakeDocumentStore:
    return FakeDocumentStore()


@pytest.fixture
def session() -> StubSession:
    return StubSession()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(
    stub: StubExecutions, store: FakeDocumentStore, session: StubSession, clock: Clock
) -> Callable[..., CloudWorkflowsExecutions]:
    def build(**overrides: Any) -> CloudWorkflowsExecutions:
        options: dict[str, Any] = {
            "client": stub,
            "session": session,
            "clock": clock,
            "sleep": lambda s: None,
            **overrides,
        }
        return CloudWorkflowsExecutions({"dispatch": PARENT}, store, **options)

    return build


@pytest.fixture
def workflows(make: Callable[..., CloudWorkflowsExecutions]) -> CloudWorkflowsExecutions:
    return make()


def _created(stub: StubExecutions) -> list[Any]:
    return [r for m, r in stub.requests if m == "create_execution"]


# starting --------------------------------------------------------------------------------------


def test_start_creates_an_execution_of_the_configured_workflow_labelled_with_the_id(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions, store: FakeDocumentStore
) -> None:
    execution = workflows.start("dispatch", {"window_id": "w-42", "max_offers": 2}, "dispatch-w-42")

    [request] = _created(stub)
    assert request.parent == PARENT
    assert json.loads(request.execution.argument) == {"window_id": "w-42", "max_offers": 2}
    assert dict(request.execution.labels) == {"meridian_execution_id": "dispatch-w-42"}
    assert execution.execution_id == "dispatch-w-42"
    assert execution.workflow == "dispatch"
    assert execution.state == "ACTIVE"
    assert execution.argument == {"window_id": "w-42", "max_offers": 2}
    recorded = store.get("workflow_starts/dispatch-w-42")
    assert recorded is not None
    assert recorded.data["name"] == f"{PARENT}/executions/cloud-1"
    assert recorded.data["claim"] is None


def test_starting_the_same_id_again_returns_the_first_execution(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    first = workflows.start("dispatch", {"window_id": "w-42"}, "dispatch-w-42")
    again = workflows.start("dispatch", {"window_id": "w-42", "max_offers": 9}, "dispatch-w-42")

    assert len(_created(stub)) == 1
    assert again.execution_id == first.execution_id == "dispatch-w-42"
    assert again.argument == {"window_id": "w-42"}  # the first start's argument stands
    method, request = stub.requests[-1]
    assert method == "get_execution"
    assert request.name == f"{PARENT}/executions/cloud-1"
    assert request.view == executions_v1.ExecutionView.FULL


def test_a_start_in_flight_elsewhere_is_waited_for_and_its_execution_returned(
    make: Callable[..., CloudWorkflowsExecutions],
    stub: StubExecutions,
    store: FakeDocumentStore,
    clock: Clock,
) -> None:
    other = make()
    path = start_path("dispatch-w-42")
    store.create(path, {"name": None, "claim": "theirs", "claimed_at": clock.now})

    def their_start_finishes(_: float) -> None:
        created = stub.create_execution(
            executions_v1.CreateExecutionRequest(
                parent=PARENT, execution=executions_v1.Execution(argument='{"window_id":"w-42"}')
            )
        )
        store.update(path, {"name": created.name, "workflow": "dispatch"})

    mine = make(sleep=their_start_finishes).start(
        "dispatch", {"window_id": "w-42"}, "dispatch-w-42"
    )

    assert len(_created(stub)) == 1  # theirs only
    assert mine.execution_id == "dispatch-w-42"
    assert other.get("dispatch-w-42").argument == {"window_id": "w-42"}


def test_a_fresh_claim_that_never_finishes_is_unavailable_not_a_second_execution(
    make: Callable[..., CloudWorkflowsExecutions], stub: StubExecutions, store: FakeDocumentStore
) -> None:
    store.create(start_path("dispatch-w-42"), {"name": None, "claim": "x", "claimed_at": T0})
    workflows = make(wait_for_start_s=0.0)

    with pytest.raises(Unavailable, match="being started"):
        workflows.start("dispatch", {"window_id": "w-42"}, "dispatch-w-42")
    assert _created(stub) == []


def test_a_stale_claim_is_taken_over_and_adopts_the_execution_its_starter_created(
    workflows: CloudWorkflowsExecutions,
    stub: StubExecutions,
    store: FakeDocumentStore,
    clock: Clock,
) -> None:
    # the starter created the execution, then crashed before recording its name
    orphan = stub.create_execution(
        executions_v1.CreateExecutionRequest(
            parent=PARENT,
            execution=executions_v1.Execution(
                argument='{"window_id":"w-42"}', labels={"meridian_execution_id": "dispatch-w-42"}
            ),
        )
    )
    store.create(start_path("dispatch-w-42"), {"name": None, "claim": "x", "claimed_at": T0})
    clock.now = T0 + timedelta(minutes=5)

    execution = workflows.start("dispatch", {"window_id": "w-42"}, "dispatch-w-42")

    assert stub.created == 1  # adopted, not created again
    [listing] = [r for m, r in stub.requests if m == "list_executions"]
    assert listing.parent == PARENT
    assert listing.filter == 'labels.meridian_execution_id="dispatch-w-42"'
    assert execution.execution_id == "dispatch-w-42"
    recorded = store.get(start_path("dispatch-w-42"))
    assert recorded is not None and recorded.data["name"] == orphan.name


def test_a_failed_create_leaves_a_claim_that_a_later_retry_takes_over(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions, clock: Clock
) -> None:
    stub.failures["create_execution"] = api.ResourceExhausted("concurrent executions quota")
    with pytest.raises(Unavailable, match="quota"):
        workflows.start("dispatch", {"window_id": "w-42"}, "dispatch-w-42")

    clock.now = T0 + timedelta(minutes=3)
    execution = workflows.start("dispatch", {"window_id": "w-42"}, "dispatch-w-42")

    assert execution.state == "ACTIVE"
    assert len(_created(stub)) == 2  # the refused one and the one that ran
    assert stub.created == 1


def test_an_id_that_is_not_a_label_value_is_labelled_by_its_hash(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    workflows.start("dispatch", {"window_id": "W.42"}, "dispatch-W.42")

    [request] = _created(stub)
    label = request.execution.labels["meridian_execution_id"]
    assert label == label_value("dispatch-W.42")
    assert label.startswith("h-") and label == label.lower() and len(label) <= 63
    assert workflows.get("dispatch-W.42").execution_id == "dispatch-W.42"


def test_start_without_an_id_uses_the_cloud_id(workflows: CloudWorkflowsExecutions) -> None:
    execution = workflows.start("dispatch", {"window_id": "w-1"})

    assert execution.execution_id == "cloud-1"
    assert workflows.get("cloud-1").argument == {"window_id": "w-1"}


def test_start_refuses_an_argument_above_32_kib_and_an_unknown_workflow(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    with pytest.raises(ValidationError, match="32768 bytes"):
        workflows.start("dispatch", {"blob": "x" * 40_000}, "dispatch-w-big")
    with pytest.raises(NotFound, match="MERIDIAN_BILLING_RUN_WORKFLOW"):
        workflows.start("billing-run", {}, "b-1")
    assert _created(stub) == []


# reading ---------------------------------------------------------------------------------------


def _put(stub: StubExecutions, name: str, **fields: Any) -> None:
    stub.executions[f"{PARENT}/executions/{name}"] = executions_v1.Execution(
        name=f"{PARENT}/executions/{name}", start_time=T0, argument="{}", **fields
    )


def test_get_maps_a_success_with_its_result(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    _put(
        stub,
        "e1",
        state=State.SUCCEEDED,
        end_time=T0 + timedelta(seconds=30),
        result='{"status": "DISPATCHED", "routes_confirmed": ["w-1-r01"]}',
    )

    execution = workflows.get(f"{PARENT}/executions/e1")

    assert execution.state == "SUCCEEDED"
    assert execution.result == {"status": "DISPATCHED", "routes_confirmed": ["w-1-r01"]}
    assert execution.end_time == T0 + timedelta(seconds=30)
    assert execution.error is None
    assert execution.workflow == "dispatch"


def test_get_maps_a_failure_with_the_engines_error_shape(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    trace = executions_v1.Execution.StackTrace(
        elements=[
            executions_v1.Execution.StackTraceElement(
                step="post",
                routine="step",
                position=executions_v1.Execution.StackTraceElement.Position(line=251, column=9),
            )
        ]
    )
    _put(
        stub,
        "e2",
        state=State.FAILED,
        error=executions_v1.Execution.Error(
            payload='{"message": "HTTP server responded with error code 503", "code": 503}',
            context="HttpError",
            stack_trace=trace,
        ),
    )

    execution = workflows.get(f"{PARENT}/executions/e2")

    assert execution.state == "FAILED"
    assert execution.error == {
        "payload": '{"message": "HTTP server responded with error code 503", "code": 503}',
        "context": "HttpError",
        "stack_trace": {
            "elements": [
                {"step": "post", "routine": "step", "position": {"line": 251, "column": 9}}
            ]
        },
    }


def test_a_queued_execution_is_active_and_an_unavailable_one_is_unavailable(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    _put(stub, "queued", state=State.QUEUED)
    _put(stub, "dark", state=State.UNAVAILABLE)

    assert workflows.get(f"{PARENT}/executions/queued").state == "ACTIVE"
    with pytest.raises(Unavailable):
        workflows.get(f"{PARENT}/executions/dark")


def test_get_of_an_id_never_started_or_still_being_started_is_not_found(
    workflows: CloudWorkflowsExecutions, store: FakeDocumentStore
) -> None:
    store.create(start_path("dispatch-w-9"), {"name": None, "claim": "x", "claimed_at": T0})

    with pytest.raises(NotFound):
        workflows.get("dispatch-w-404")
    with pytest.raises(NotFound):
        workflows.get("dispatch-w-9")


def test_list_filters_by_state_and_reports_the_callers_ids(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    workflows.start("dispatch", {"window_id": "w-1"}, "dispatch-w-1")
    _put(stub, "started-by-hand", state=State.ACTIVE)

    found = workflows.list("dispatch", state="ACTIVE")

    request = stub.requests[-1][1]
    assert request.parent == PARENT
    assert request.filter == 'state="ACTIVE" OR state="QUEUED"'
    assert request.view == executions_v1.ExecutionView.FULL
    assert sorted(e.execution_id for e in found) == ["dispatch-w-1", "started-by-hand"]
    assert workflows.list("dispatch")  # no state: no filter
    assert stub.requests[-1][1].filter == ""


def test_cancel_cancels_by_name_and_reports_an_ended_execution_as_it_ended(
    workflows: CloudWorkflowsExecutions, stub: StubExecutions
) -> None:
    workflows.start("dispatch", {"window_id": "w-1"}, "dispatch-w-1")

    cancelled = workflows.cancel("dispatch-w-1")
    again = workflows.cancel("dispatch-w-1")

    cancels = [r for m, r in stub.requests if m == "cancel_execution"]
    assert [r.name for r in cancels] == [f"{PARENT}/executions/cloud-1"] * 2
    assert cancelled.state == again.state == "CANCELLED"


# errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("google_error", "core_error"),
    [
        (api.NotFound("gone"), NotFound),
        (api.FailedPrecondition("not active"), Conflict),
        (api.InvalidArgument("bad filter"), ValidationError),
        (api.PermissionDenied("workflows.executions.get"), PermissionDenied),
        (api.Unauthenticated("token expired"), Unauthenticated),
        (api.ResourceExhausted("quota"), Unavailable),
        (api.ServiceUnavailable("try again"), Unavailable),
        (api.DeadlineExceeded("slow"), Unavailable),
        (api.InternalServerError("oops"), Unavailable),
    ],
)
def test_google_api_errors_become_the_cores_errors(
    workflows: CloudWorkflowsExecutions,
    stub: StubExecutions,
    google_error: Exception,
    core_error: type[MeridianError],
) -> None:
    workflows.start("dispatch", {"window_id": "w-1"}, "dispatch-w-1")
    stub.failures["get_execution"] = google_error

    with pytest.raises(core_error) as raised:
        workflows.get("dispatch-w-1")
    assert raised.value.__cause__ is google_error


# callbacks -------------------------------------------------------------------------------------

CALLBACK = (
    "https://workflowexecutions.googleapis.com/v1/"
    f"{PARENT}/executions/cloud-1/callbacks/1700000000000_000000000001"
)


def test_send_callback_posts_the_body_as_json_to_the_url(
    workflows: CloudWorkflowsExecutions, session: StubSession
) -> None:
    workflows.send_callback(CALLBACK, {"decision": "accept", "driver_id": "drv-7"})

    assert session.posts == [(CALLBACK, {"decision": "accept", "driver_id": "drv-7"})]


@pytest.mark.parametrize(
    ("answer", "core_error"),
    [
        (StubResponse(404, "execution not active"), NotFound),
        (StubResponse(429, "callback already queued"), Conflict),
        (StubResponse(403, "workflows.callbacks.send"), PermissionDenied),
        (StubResponse(503), Unavailable),
        (StubResponse(400, "bad body"), ValidationError),
        (requests.ConnectionError("reset"), Unavailable),
    ],
)
def test_callback_answers_become_the_cores_errors(
    workflows: CloudWorkflowsExecutions,
    session: StubSession,
    answer: StubResponse | Exception,
    core_error: type[MeridianError],
) -> None:
    session.answers.append(answer)

    with pytest.raises(core_error):
        workflows.send_callback(CALLBACK, {"decision": "decline"})


# wiring ----------------------------------------------------------------------------------------


def test_the_gcp_backend_builds_the_adapter_from_the_terraform_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeDocumentStore()
    environment = {
        "MERIDIAN_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": "meridian-prod",
        "MERIDIAN_DISPATCH_WORKFLOW": PARENT,
    }
    monkeypatch.setattr(adapters, "document_store", lambda settings, **_: store)

    built = adapters.workflow_executions(Settings.from_env(environment))

    assert isinstance(built, CloudWorkflowsExecutions)
    assert built.workflows == {"dispatch": PARENT}
    assert built.store is store
