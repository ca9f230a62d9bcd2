"""``googleapis.run.v2.projects.locations.jobs.run``: the Cloud Run Admin API connector, with each
Cloud Run Job run as a local process.

On Google Cloud the connector starts an execution of the job and waits for it, polling the
long-running operation with backoff, up to ``connector_params.timeout`` (1800 s by default). It
returns the finished Execution resource, or raises ``OperationError`` with the failed operation
(``operation.error``, ``operation.metadata``: the Execution) when the job's task fails, that is
when its container exits non-zero. Here a ``JobRunner`` runs the job, by default as
``meridian job run JOB ARGS...`` in a child process (``ProcessJobRunner``) with the environment
Cloud Run gives a job's container (``CLOUD_RUN_JOB``, ``CLOUD_RUN_EXECUTION``,
``CLOUD_RUN_TASK_INDEX``, ...), and the connector awaits its exit instead of polling: the same
answers, without the polling's billable steps. The override's ``args`` replace the container's
arguments, as on Cloud Run, where the job's command is ``meridian job run JOB``.

Durability (see ``checkpoints``): the execution's name is kept in the step's record and committed
before the process starts, and each execution is recorded in the engine's store (RUNNING, then
SUCCEEDED or FAILED with its Execution resource). A resumed workflow execution that re-enters the
step finds that record: a finished job's result is returned, or its error raised, again, and the
job is not run twice. A record still RUNNING belongs to a process that ended with the engine (it
dies with its parent) and is run again as the execution's next attempt, as Cloud Run retries a
failed task: jobs must be idempotent, as Cloud Run's must.

What the embedded connector refuses: ``skip_polling`` (it always waits), ``taskCount`` above one
and more than one container override.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import secrets
import signal
import string
import sys
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meridian.ports import DocumentStore

from . import records
from .errors import WorkflowError, builtin, type_error, value_error
from .expressions import is_number

CONNECTOR = "googleapis.run.v2.projects.locations.jobs.run"
EXECUTIONS = "cloud_run_executions"  # one document per job execution, in the engine's store
DEFAULT_CONNECTOR_TIMEOUT = 1800.0
MAX_CONNECTOR_TIMEOUT = 31_536_000.0
DEFAULT_TASK_TIMEOUT = 600.0  # Cloud Run's default task timeout
_JOB_NAME = re.compile(
    r"^projects/([^/]+)/locations/([^/]+)/jobs/([a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)$"
)
_LOG_TAIL = 2000


@dataclass(frozen=True)
class TaskOutcome:
    """How a job's one task ended: its exit code (None if it was killed at its timeout) and the
    end of what it wrote, for the error message."""

    exit_code: int | None
    output_tail: str
    log_uri: str = ""


class UnknownJob(LookupError):
    """No job of that name can run here."""


class JobRunner(Protocol):
    """Runs one task of a job to its end."""

    async def run(
        self, job: str, args: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> TaskOutcome:
        """Raises UnknownJob if ``job`` is not one this runner knows."""


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the engine's process dies, so a job never outlives
    the engine that waits for it (a resumed execution runs it again)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ProcessJobRunner:
    """Runs ``command + [job, *args]`` as a child process, its output appended to
    ``log_dir/<execution>.log``. ``known`` names the jobs it may run (None: any)."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        known: Collection[str] | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.known = None if known is None else frozenset(known)
        self.env = dict(env or {})
        self.log_dir = log_dir

    async def run(
        self, job: str, args: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> TaskOutcome:
        if self.known is not None and job not in self.known:
            raise UnknownJob(job)
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{env.get('CLOUD_RUN_EXECUTION', job)}.log"
        process = await asyncio.create_subprocess_exec(
            *self.command,
            job,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**self.env, **env},
            preexec_fn=_die_with_parent,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
            exit_code: int | None = process.returncode
        except TimeoutError:
            output, exit_code = b"", None
        finally:
            if process.returncode is None:  # timed out, or the step was cancelled
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        text = output.decode(errors="replace")
        if log_path is not None:
            with log_path.open("a") as log:
                log.write(text)
        return TaskOutcome(exit_code, text[-_LOG_TAIL:], log_path.as_uri() if log_path else "")


def execution_path(name: str) -> str:
    return f"{EXECUTIONS}/{name}"


def _http_error(code: int, message: str) -> WorkflowError:
    """The connector's HttpError for a refused request (reference §6.4)."""
    return WorkflowError(
        {"message": message, "code": code, "headers": {}, "body": {}, "tags": ["HttpError"]}
    )


@dataclass(frozen=True)
class JobRequest:
    """A parsed ``jobs.run`` call: which job, its arguments and environment, its limits."""

    project: str
    location: str
    job: str
    args: tuple[str, ...]
    env: dict[str, str]
    task_timeout: float
    timeout: float

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> JobRequest:
        name = args.get("name")
        match = _JOB_NAME.match(name) if isinstance(name, str) else None
        if match is None:
            raise _http_error(
                400, f"{CONNECTOR}: name must be projects/P/locations/L/jobs/JOB, got {name!r}"
            )
        body = args.get("body") or {}
        if not isinstance(body, dict):
            raise type_error(f"{CONNECTOR}: body must be a map")
        overrides = body.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise type_error(f"{CONNECTOR}: body.overrides must be a map")
        containers = overrides.get("containerOverrides") or []
        if not isinstance(containers, list) or len(containers) > 1:
            raise value_error(f"{CONNECTOR}: the embedded engine runs one container override")
        container = containers[0] if containers else {}
        job_args = container.get("args") or []
        if not isinstance(job_args, list) or not all(isinstance(a, str) for a in job_args):
            raise type_error(f"{CONNECTOR}: containerOverrides[0].args must be a list of strings")
        env = {}
        for pair in container.get("env") or []:
            if not isinstance(pair, dict) or not isinstance(pair.get("name"), str):
                raise type_error(f"{CONNECTOR}: env entries are maps with a name and a value")
            env[pair["name"]] = str(pair.get("value", ""))
        if overrides.get("taskCount", 1) != 1:
            raise value_error(f"{CONNECTOR}: the embedded engine runs one task per execution")
        task_timeout = _seconds(overrides.get("timeout"), DEFAULT_TASK_TIMEOUT)
        params = args.get("connector_params") or {}
        if not isinstance(params, dict):
            raise type_error(f"{CONNECTOR}: connector_params must be a map")
        if params.get("skip_polling"):
            raise value_error(f"{CONNECTOR}: skip_polling is not supported; the call waits")
        timeout = params.get("timeout", DEFAULT_CONNECTOR_TIMEOUT)
        if not is_number(timeout) or not 0 < timeout <= MAX_CONNECTOR_TIMEOUT:
            raise value_error(
                f"{CONNECTOR}: connector_params.timeout must be 1..{MAX_CONNECTOR_TIMEOUT:.0f} s"
            )
        project, location, job = match.groups()
        return cls(project, location, job, tuple(job_args), env, task_timeout, float(timeout))


def _seconds(value: Any, default: float) -> float:
    """A protobuf Duration as JSON (``"600s"``) or a number of seconds."""
    if value is None:
        return default
    if is_number(value):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        with contextlib.suppress(ValueError):
            return float(value[:-1])
    raise value_error(f"{CONNECTOR}: timeout must be a duration such as '600s', got {value!r}")


def _suffix() -> str:
    """Cloud Run's execution names end with five random lowercase letters and digits."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))


class Host(Protocol):
    """What the connector needs from the running workflow execution."""

    def now(self) -> float: ...

    def save(self, entry: dict[str, Any] | None = None) -> None: ...

    async def durable(self) -> None:
        """Return once every save made so far is committed."""


class CloudRunJobs:
    """The connector over a store (the executions' records) and a runner (None: every call is
    refused as a job that does not exist, as in a project without it)."""

    def __init__(self, store: DocumentStore, runner: JobRunner | None) -> None:
        self.store = store
        self.runner = runner

    async def run(self, args: Mapping[str, Any], rec: dict[str, Any], host: Host) -> Any:
        request = JobRequest.parse(args)
        if "run" not in rec:
            rec["run"] = f"{request.job}-{_suffix()}"
            host.save()
        await host.durable()  # the execution's name is committed before its process can exist
        name = f"projects/{request.project}/locations/{request.location}/jobs/{request.job}"
        name += f"/executions/{rec['run']}"
        found = self.store.get(execution_path(rec["run"]))
        record = dict(found.data) if found is not None else None
        if record is None or record["state"] == "RUNNING":
            attempt = 0 if record is None else int(record.get("attempt", 0)) + 1
            record = await self._run(request, name, rec["run"], attempt, host)
        if record["state"] == "SUCCEEDED":
            return records.load_state(record["execution"])
        execution = records.load_state(record["execution"])
        message = str(record["message"])
        raise WorkflowError(
            {
                "message": message,
                "tags": ["OperationError"],
                "operation": {
                    "name": f"projects/{request.project}/locations/{request.location}"
                    f"/operations/{record['operation']}",
                    "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution"}
                    | execution,
                    "done": True,
                    "error": {"code": 2, "message": message},
                },
            }
        )

    async def _run(
        self, request: JobRequest, name: str, short: str, attempt: int, host: Host
    ) -> dict[str, Any]:
        if self.runner is None:
            raise _http_error(404, f"Resource '{request.job}' of kind 'JOB' does not exist.")
        start = host.now()
        path = execution_path(short)
        operation = str(uuid.uuid4())
        self.store.set(
            path,
            {
                "name": name,
                "job": request.job,
                "state": "RUNNING",
                "attempt": attempt,
                "operation": operation,
                "start_time": start,
            },
        )
        env = {
            "CLOUD_RUN_JOB": request.job,
            "CLOUD_RUN_EXECUTION": short,
            "CLOUD_RUN_TASK_INDEX": "0",
            "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
            "CLOUD_RUN_TASK_COUNT": "1",
            **request.env,
        }
        try:
            outcome = await asyncio.wait_for(
                self.runner.run(request.job, request.args, env, request.task_timeout),
                request.timeout,
            )
        except UnknownJob:
            self.store.delete(path)
            raise _http_error(
                404,
                f"Resource '{request.job}' of kind 'JOB' in region '{request.location}' in "
                f"project '{request.project}' does not exist.",
            ) from None
        except TimeoutError:
            raise builtin(
                "TimeoutError",
                f"{CONNECTOR}: {name} still running after {request.timeout:.0f} s "
                "(connector_params.timeout)",
            ) from None
        succeeded = outcome.exit_code == 0
        end = host.now()
        if succeeded:
            message = f"Execution {short} has completed successfully."
        elif outcome.exit_code is None:
            message = (
                f"Execution {short} has failed to complete, 0/1 tasks were a success: the task "
                f"ran past its timeout of {request.task_timeout:.0f} s."
            )
        else:
            tail = outcome.output_tail.strip().splitlines()
            last = f" Last output: {tail[-1]}" if tail else ""
            message = (
                f"Execution {short} has failed to complete, 0/1 tasks were a success: the "
                f"container exited with a non-zero status of {outcome.exit_code}.{last}"
            )
        execution = _execution(request, name, short, start, end, attempt, succeeded, message)
        execution["logUri"] = outcome.log_uri
        record = {
            "name": name,
            "job": request.job,
            "state": "SUCCEEDED" if succeeded else "FAILED",
            "attempt": attempt,
            "operation": operation,
            "start_time": start,
            "end_time": end,
            "exit_code": outcome.exit_code,
            "message": message,
            "execution": records.dump_state(execution),
        }
        self.store.set(path, record)
        return record


def _execution(
    request: JobRequest,
    name: str,
    short: str,
    start: float,
    end: float,
    attempt: int,
    succeeded: bool,
    message: str,
) -> dict[str, Any]:
    """The Cloud Run v2 Execution resource of a finished one-task execution."""
    started, finished = records.iso(start), records.iso(end)
    state = "CONDITION_SUCCEEDED" if succeeded else "CONDITION_FAILED"
    return {
        "name": name,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        "generation": "1",
        "createTime": started,
        "startTime": started,
        "completionTime": finished,
        "updateTime": finished,
        "launchStage": "GA",
        "job": request.job,
        "parallelism": 1,
        "taskCount": 1,
        "template": {
            "containers": [{"args": list(request.args)}],
            "timeout": f"{request.task_timeout:.0f}s",
        },
        "conditions": [
            {"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED"},
            {"type": "Started", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": started},
            {
                "type": "Completed",
                "state": state,
                "message": message,
                "lastTransitionTime": finished,
            },
        ],
        "succeededCount": 1 if succeeded else 0,
        "failedCount": 0 if succeeded else 1,
        "retriedCount": attempt,
        "etag": f'"{short}"',
    }
