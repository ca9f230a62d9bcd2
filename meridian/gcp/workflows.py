"""The WorkflowExecutions port on Google Cloud Workflows (``google-cloud-workflows``).

Executions are created, read, listed and cancelled with the Workflow Executions API
(``executions_v1.ExecutionsClient``); a callback is an authenticated ``POST`` to the URL that
``events.create_callback_endpoint`` gave the execution (reference §6.9), sent with the service's
default credentials.

**Idempotent start.** The port starts an execution under an id the caller chooses (the command
service uses ``dispatch-{window_id}``, so a window opened twice has one saga), but Cloud Workflows
names every execution itself. The adapter keeps the caller's id → execution name in the document
store, in ``workflow_starts/{execution_id}``, and the document is written before the execution is
created (a *claim*), so two concurrent starts of one id cannot both create:

1. A transaction reads the document. A recorded name means the execution exists: it is returned.
   No document: the claim is created (Firestore's create-if-absent makes one starter win). A
   claim without a name that is younger than ``claim_timeout_s`` belongs to a start in flight:
   the adapter waits for its name a little, then answers Unavailable (the caller retries).
2. The claimer creates the execution, labelled ``meridian_execution_id`` with the id (hashed when
   it is not a valid label value), then records its name in the same document.
3. A claim older than ``claim_timeout_s`` (its starter crashed between 1 and 3, or its create
   failed) is taken over in a transaction; the new claimer first lists the workflow's executions
   by that label, so an execution created just before a crash is adopted, not duplicated. The
   create call's deadline is well below the claim timeout, so a slow create is over (created or
   not) before anyone takes its claim.

Why the store and not the window document: ``get``/``cancel`` take the same id, from the command
service, the CLI or anything else, so the mapping belongs to the port, not to dispatch; and a
Cloud Workflows call cannot run inside a Firestore transaction (transactions are re-run), so the
claim is what makes the start exactly-once. Inside the saga ``GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID``
is Cloud Workflows' own id; step idempotency keys built from it are stable because there is only
one execution per id.

Which workflow ``start("dispatch", …)`` means is configured as a full resource name
(``projects/P/locations/L/workflows/W``), as Terraform sets ``MERIDIAN_DISPATCH_WORKFLOW``.

States map one to one, except ``QUEUED`` (backlogged, not started yet), which is ACTIVE to the
port, and ``UNAVAILABLE`` (Workflows cannot read the execution's data), which raises Unavailable.
API errors become the core's: NotFound, Conflict (failed precondition), ValidationError (invalid
argument), PermissionDenied, Unauthenticated, and Unavailable for quota, deadline and server
errors.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from meridian.domain.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from meridian.ports import DocumentStore, Execution, Query, Transaction, WorkflowExecutions

STARTS = "workflow_starts"
LABEL = "meridian_execution_id"
MAX_ARGUMENT_BYTES = 32 * 1024  # the API's limit on the argument's JSON (reference §6.10)
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_STATES: dict[str, Literal["ACTIVE", "SUCCEEDED", "FAILED", "CANCELLED"]] = {
    "ACTIVE": "ACTIVE",
    "QUEUED": "ACTIVE",
    "SUCCEEDED": "SUCCEEDED",
    "FAILED": "FAILED",
    "CANCELLED": "CANCELLED",
}
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{1,63}$")
_DOCUMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def label_value(execution_id: str) -> str:
    """The id as a label value (lowercase letters, digits, ``_``, ``-``; ≤ 63), else its hash."""
    if _LABEL_VALUE.match(execution_id):
        return execution_id
    return "h-" + hashlib.sha256(execution_id.encode()).hexdigest()[:40]


def start_path(execution_id: str) -> str:
    if _DOCUMENT_ID.match(execution_id):
        return f"{STARTS}/{execution_id}"
    return f"{STARTS}/h-{hashlib.sha256(execution_id.encode()).hexdigest()[:40]}"


def _error_of(error: Any) -> dict[str, Any]:
    """Workflow Executions' ``Error`` as the embedded engine reports it."""
    return {
        "payload": error.payload,
        "context": error.context,
        "stack_trace": {
            "elements": [
                {
                    "step": e.step,
                    "routine": e.routine,
                    "position": {"line": e.position.line, "column": e.position.column},
                }
                for e in error.stack_trace.elements
            ]
        },
    }


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Google API errors as the core's errors, at the boundary."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    try:
        yield
    except api.NotFound as e:
        raise NotFound(f"{what}: {e.message}") from e
    except api.AlreadyExists as e:
        raise AlreadyExists(f"{what}: {e.message}") from e
    except (api.FailedPrecondition, api.Aborted) as e:
        raise Conflict(f"{what}: {e.message}") from e
    except (api.InvalidArgument, api.OutOfRange) as e:
        raise ValidationError(f"{what}: {e.message}") from e
    except api.PermissionDenied as e:
        raise PermissionDenied(f"{what}: {e.message}") from e
    except api.Unauthenticated as e:
        raise Unauthenticated(f"{what}: {e.message}") from e
    except (api.GoogleAPIError, auth.GoogleAuthError) as e:
        # quota (ResourceExhausted), deadlines, server errors, retries given up, credentials
        raise Unavailable(f"{what}: {e}") from e


@dataclass(frozen=True)
class _Claim:
    name: str | None = None
    token: str | None = None
    taken_over: bool = False


class CloudWorkflowsExecutions(WorkflowExecutions):
    """Executions of Cloud Workflows definitions, addressed by the caller's execution ids.

    ``workflows`` maps the port's workflow names to resource names. ``client`` (an
    ``ExecutionsClient``) and ``session`` (an ``AuthorizedSession``) are built on first use when
    not given; tests pass stubs."""

    def __init__(
        self,
        workflows: Mapping[str, str],
        store: DocumentStore,
        *,
        client: Any = None,
        session: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        claim_timeout_s: float = 120.0,
        create_timeout_s: float = 30.0,
        wait_for_start_s: float = 10.0,
    ) -> None:
        if create_timeout_s >= claim_timeout_s:
            raise ValueError("a create must be over before its claim can be taken over")
        self.workflows = dict(workflows)
        self.store = store
        self._client = client
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self.claim_timeout = timedelta(seconds=claim_timeout_s)
        self.create_timeout_s = create_timeout_s
        self.wait_for_start_s = wait_for_start_s

    # clients --------------------------------------------------------------------------------------

    def _api(self) -> Any:
        if self._client is None:
            from google.cloud.workflows import executions_v1

            self._client = executions_v1.ExecutionsClient()
        return self._client

    def _http(self) -> Any:
        if self._session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            with _translated("Google credentials"):
                credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            self._session = AuthorizedSession(credentials)
        return self._session

    def _parent(self, workflow: str) -> str:
        if workflow not in self.workflows:
            raise NotFound(
                f"workflow {workflow}: no resource name configured "
                f"(MERIDIAN_{workflow.upper().replace('-', '_')}_WORKFLOW)"
            )
        return self.workflows[workflow]

    def _workflow_of(self, name: str) -> str:
        parent = name.split("/executions/", 1)[0]
        for workflow, configured in self.workflows.items():
            if configured == parent:
                return workflow
        return parent.rsplit("/", 1)[-1]

    # the port -------------------------------------------------------------------------------------

    def start(
        self, workflow: str, argument: Mapping[str, Any], execution_id: str | None = None
    ) -> Execution:
        parent = self._parent(workflow)
        text = json.dumps(dict(argument), separators=(",", ":"))
        if len(text.encode()) > MAX_ARGUMENT_BYTES:
            raise ValidationError(f"execution argument above {MAX_ARGUMENT_BYTES} bytes")
        if execution_id is None:
            created = self._create(parent, text, {})
            execution_id = created.name.rsplit("/", 1)[-1]
            self.store.set(
                start_path(execution_id),
                self._record(execution_id, workflow, parent, created.name, None),
            )
            return self._execution(created, execution_id, workflow)
        claim = self._claim(execution_id, workflow, parent)
        deadline = time.monotonic() + self.wait_for_start_s
        while claim.name is None and claim.token is None:  # another caller is starting it
            if time.monotonic() >= deadline:
                raise Unavailable(f"execution {execution_id} is being started; retry shortly")
            self._sleep(0.25)
            claim = self._claim(execution_id, workflow, parent)
        if claim.name is not None:
            return self.get(execution_id)
        assert claim.token is not None
        label = label_value(execution_id)
        created = (self._adopt(parent, label) if claim.taken_over else None) or self._create(
            parent, text, {LABEL: label}
        )
        token = claim.token
        name = self._record_name(execution_id, token, created.name)
        if name != created.name:  # lost a race it should not have lost: keep the first one
            self._cancel_name(created.name)
            return self.get(execution_id)
        return self._execution(created, execution_id, workflow)

    def get(self, execution_id: str) -> Execution:
        name, workflow = self._name(execution_id)
        from google.cloud.workflows import executions_v1

        request = executions_v1.GetExecutionRequest(
            name=name, view=executions_v1.ExecutionView.FULL
        )
        with _translated(f"execution {execution_id}"):
            found = self._api().get_execution(request=request)
        return self._execution(found, execution_id, workflow)

    def list(self, workflow: str, state: str | None = None) -> builtins.list[Execution]:
        from google.cloud.workflows import executions_v1

        parent = self._parent(workflow)
        known = {
            d.data["name"]: d.data["execution_id"]
            for d in self.store.query(Query(STARTS).where("parent", "==", parent))
            if d.data.get("name")
        }
        wanted = [s for s, port_state in _STATES.items() if port_state == state] if state else []
        request = executions_v1.ListExecutionsRequest(
            parent=parent,
            view=executions_v1.ExecutionView.FULL,
            filter=" OR ".join(f'state="{s}"' for s in wanted),
        )
        found: builtins.list[Execution] = []
        with _translated(f"executions of {workflow}"):
            for execution in self._api().list_executions(request=request):
                if execution.state.name not in _STATES:
                    continue  # UNAVAILABLE: nothing to report about it
                execution_id = known.get(execution.name, execution.name.rsplit("/", 1)[-1])
                found.append(self._execution(execution, execution_id, workflow))
        return found

    def cancel(self, execution_id: str) -> Execution:
        name, _ = self._name(execution_id)
        self._cancel_name(name)  # one that had ended already is reported as it ended
        return self.get(execution_id)

    def send_callback(self, callback_url: str, body: Mapping[str, Any]) -> None:
        """POST the body to the callback URL. 404: the execution has ended (or the URL is
        wrong); 429: an earlier request to it is queued and not yet received (Conflict)."""
        import requests
        from google.auth import exceptions as auth

        session = self._http()
        try:
            response = session.post(callback_url, json=dict(body), timeout=30)
        except (requests.RequestException, auth.GoogleAuthError) as e:
            # a token refresh failing surfaces from inside the session too
            raise Unavailable(f"callback {callback_url}: {e}") from e
        status = response.status_code
        if status < 300:
            return
        detail = f"callback {callback_url}: HTTP {status}: {response.text[:500]}"
        if status == 404:
            raise NotFound(detail)
        if status in (409, 429):
            raise Conflict(detail)
        if status == 401:
            raise Unauthenticated(detail)
        if status == 403:
            raise PermissionDenied(detail)
        if status >= 500:
            raise Unavailable(detail)
        raise ValidationError(detail)

    # starts ---------------------------------------------------------------------------------------

    @staticmethod
    def _record(
        execution_id: str, workflow: str, parent: str, name: str | None, token: str | None
    ) -> dict[str, Any]:
        return {
            "execution_id": execution_id,
            "workflow": workflow,
            "parent": parent,
            "label": label_value(execution_id),
            "name": name,
            "claim": token,
        }

    def _claim(self, execution_id: str, workflow: str, parent: str) -> _Claim:
        """The execution's name if it exists; else a token if this caller is to create it
        (``taken_over`` when an earlier claim had gone stale); else nothing: another caller's
        claim is fresh."""
        path = start_path(execution_id)
        token = uuid.uuid4().hex

        def work(tx: Transaction) -> _Claim:
            now = self._clock()
            doc = tx.get(path)
            if doc is None:
                record = self._record(execution_id, workflow, parent, None, token)
                tx.create(path, {**record, "claimed_at": now})
                return _Claim(token=token)
            if doc.data.get("name"):
                return _Claim(name=str(doc.data["name"]))
            if now - doc.data["claimed_at"] < self.claim_timeout:
                return _Claim()
            tx.update(path, {"claim": token, "claimed_at": now})
            return _Claim(token=token, taken_over=True)

        return self.store.run_transaction(work)

    def _record_name(self, execution_id: str, token: str, name: str) -> str:
        """Record the created execution under the claim; returns the name that stands."""
        path = start_path(execution_id)

        def work(tx: Transaction) -> str:
            doc = tx.get(path)
            if doc is not None and doc.data.get("name"):
                return str(doc.data["name"])
            tx.update(path, {"name": name, "claim": None, "started_at": self._clock()})
            return name

        return self.store.run_transaction(work)

    def _adopt(self, parent: str, label: str) -> Any:
        """The execution already created under this label (its starter crashed before recording
        it), or None."""
        from google.cloud.workflows import executions_v1

        request = executions_v1.ListExecutionsRequest(
            parent=parent,
            view=executions_v1.ExecutionView.FULL,
            filter=f'labels.{LABEL}="{label}"',
            order_by="createTime",
        )
        with _translated(f"executions of {parent} labelled {label}"):
            for execution in self._api().list_executions(request=request):
                return execution
        return None

    def _create(self, parent: str, argument: str, labels: Mapping[str, str]) -> Any:
        from google.cloud.workflows import executions_v1

        request = executions_v1.CreateExecutionRequest(
            parent=parent,
            execution=executions_v1.Execution(argument=argument, labels=dict(labels)),
        )
        with _translated(f"new execution of {parent}"):
            return self._api().create_execution(request=request, timeout=self.create_timeout_s)

    def _cancel_name(self, name: str) -> bool:
        """Cancel; False if the execution had already ended."""
        from google.cloud.workflows import executions_v1

        try:
            with _translated(f"execution {name}"):
                self._api().cancel_execution(
                    request=executions_v1.CancelExecutionRequest(name=name)
                )
        except Conflict:
            return False
        return True

    # reading --------------------------------------------------------------------------------------

    def _name(self, execution_id: str) -> tuple[str, str]:
        """The execution's resource name and the port's workflow name."""
        if execution_id.startswith("projects/") and "/executions/" in execution_id:
            return execution_id, self._workflow_of(execution_id)
        doc = self.store.get(start_path(execution_id))
        if doc is None or not doc.data.get("name"):
            raise NotFound(f"execution {execution_id}")
        return str(doc.data["name"]), str(doc.data["workflow"])

    @staticmethod
    def _execution(found: Any, execution_id: str, workflow: str) -> Execution:
        state = _STATES.get(found.state.name)
        if state is None:
            raise Unavailable(
                f"execution {execution_id} is {found.state.name}: {found.state_error.details}"
            )
        error = _error_of(found.error) if "error" in found else None
        return Execution(
            execution_id=execution_id,
            workflow=workflow,
            state=state,
            argument=json.loads(found.argument or "{}"),
            start_time=found.start_time if "start_time" in found else datetime.now(UTC),
            end_time=found.end_time if "end_time" in found else None,
            result=json.loads(found.result) if found.result else None,
            error=error,
        )
