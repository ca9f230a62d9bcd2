"""The embedded Workflows engine: the ``WorkflowExecutions`` port over a DocumentStore.

One event loop in a background thread runs every execution as a task; all writes to a running
execution happen on that loop, so starts, cancels and callbacks never race the interpreter. The
steps saved during one turn of the loop commit together (see ``checkpoints`` for the rule that
keeps that durable).
``close()`` commits what was already saved and stops the loop, leaving executions ACTIVE, like a
process killed a moment later: a new engine over the same store resumes every ACTIVE execution
when opened.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from meridian.concurrency.ordered_writer import OrderedWriter
from meridian.domain.errors import AlreadyExists, Conflict, NotFound, ValidationError
from meridian.ports import DocumentStore, Execution, Query, WorkflowExecutions

from . import records
from .checkpoints import Write
from .clock import Clock, SystemClock
from .cloud_run import CloudRunJobs, JobRunner
from .definition import Program, load_program
from .effects import HttpTransport, HttpxTransport, OidcToken
from .execution import ExecutionRun

T = TypeVar("T")
log = logging.getLogger("meridian.workflows")
MAX_ARGUMENT_BYTES = 32 * 1024


class WorkflowEngine(WorkflowExecutions):
    """Runs Cloud Workflows definitions durably. Build it in a bootstrap, ``open()`` it, and
    ``close()`` it on shutdown (or use it as a context manager)."""

    def __init__(
        self,
        store: DocumentStore,
        *,
        transport: HttpTransport | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        base_url: str = "http://127.0.0.1:8790",
        project: str = "meridian-local",
        location: str = "local",
        oidc_token: OidcToken | None = None,
        jobs: JobRunner | None = None,
    ) -> None:
        self.store = store
        self.transport = transport or HttpxTransport()
        self.clock = clock or SystemClock()
        self.env = dict(env or {})
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.location = location
        self.oidc_token = oidc_token  # signs calls made with ``auth: {type: OIDC}``
        # the Cloud Run Admin API connector's jobs (without a runner, no job exists)
        self.cloud_run = CloudRunJobs(store, jobs)
        self.programs: dict[str, Program] = {}
        # every execution's saves, one batch per loop turn (checkpoints.StoredState is a source)
        self.commits: OrderedWriter[Write] = OrderedWriter(store.batch_write, "workflows-commit")
        self._revisions: dict[str, Program] = {}
        self._runs: dict[str, ExecutionRun] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # definitions --------------------------------------------------------------------------------

    def register(self, name: str, source: str) -> Program:
        """Load a definition (refused with DefinitionError if it uses what the engine lacks)."""
        program = load_program(name, source)
        self.programs[name] = program
        return program

    def register_directory(self, directory: Path) -> list[str]:
        """Register every ``*.yaml``/``*.yml``/``*.json`` file, named by its stem."""
        names = []
        for path in sorted(directory.iterdir()):
            if path.suffix in (".yaml", ".yml", ".json"):
                self.register(path.stem, path.read_text())
                names.append(path.stem)
        return names

    def program_for(self, revision: str) -> Program:
        if revision not in self._revisions:
            doc = self.store.get(f"{records.REVISIONS}/{revision}")
            if doc is None:
                raise NotFound(f"workflow revision {revision}")
            self._revisions[revision] = load_program(doc.data["workflow"], doc.data["source"])
        return self._revisions[revision]

    # lifecycle ----------------------------------------------------------------------------------

    def open(self) -> WorkflowEngine:
        """Start the loop and resume every ACTIVE execution."""
        if self._loop is not None:
            return self
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="workflows-engine", daemon=True)
        self._thread.start()
        ready.wait()
        self._on_loop(self._resume_all())
        return self

    def close(self) -> None:
        """Stop running executions where they are (their state stays ACTIVE in the store)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._on_loop(self._stop_all())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop, self._thread = None, None

    def __enter__(self) -> WorkflowEngine:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the workflow engine is not open")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    async def _resume_all(self) -> None:
        warm = getattr(self.transport, "warm", None)
        if warm is not None:
            warm()
        active = self.store.query(Query(records.EXECUTIONS).where("state", "==", "ACTIVE"))
        for doc in active:
            self._spawn(dict(doc.data))
        if active:
            log.info("resumed %d active workflow executions", len(active))

    async def _stop_all(self) -> None:
        runs = list(self._runs.values())
        for run in runs:
            run.task.cancel()
        for run in runs:
            with contextlib.suppress(BaseException):
                await run.task
        self.commits.flush()  # what they saved before stopping, as if killed a moment later
        self.commits.close()
        for run in runs:
            run.stored.close()
        self._runs.clear()
        closer = getattr(self.transport, "aclose", None)
        if closer is not None:
            await closer()

    def _spawn(self, doc: dict[str, Any]) -> None:
        run = ExecutionRun(self, doc, self.program_for(doc["revision"]))
        self._runs[doc["execution_id"]] = run
        run.task = asyncio.get_running_loop().create_task(self._drive(run))

    async def _drive(self, run: ExecutionRun) -> None:
        try:
            await run.run()
        finally:
            self._runs.pop(run.execution_id, None)

    # the port -----------------------------------------------------------------------------------

    def start(
        self, workflow: str, argument: Mapping[str, Any], execution_id: str | None = None
    ) -> Execution:
        if workflow not in self.programs:
            raise NotFound(f"workflow {workflow}")
        if len(records.dump_state(argument)) > MAX_ARGUMENT_BYTES:
            raise ValidationError(f"execution argument above {MAX_ARGUMENT_BYTES} bytes")
        return self._on_loop(
            self._start(workflow, dict(argument), execution_id or str(uuid.uuid4()))
        )

    async def _start(self, workflow: str, argument: dict[str, Any], execution_id: str) -> Execution:
        existing = self.store.get(records.execution_path(execution_id))
        if existing is not None:
            return records.to_execution(dict(existing.data))
        program = self.programs[workflow]
        revision = records.revision_id(workflow, program.source)
        if revision not in self._revisions:  # stored once per engine, not on every start
            self.store.set(
                f"{records.REVISIONS}/{revision}", {"workflow": workflow, "source": program.source}
            )
            self._revisions[revision] = program
        doc = ExecutionRun.new_document(
            program, execution_id, workflow, revision, argument, self.clock.now()
        )
        try:
            self.store.create(records.execution_path(execution_id), doc)
        except AlreadyExists:
            found = self.store.get(records.execution_path(execution_id))
            assert found is not None
            return records.to_execution(dict(found.data))
        self._spawn(doc)
        return records.to_execution(doc)

    def get(self, execution_id: str) -> Execution:
        return records.to_execution(self._document(execution_id))

    def _document(self, execution_id: str) -> dict[str, Any]:
        doc = self.store.get(records.execution_path(execution_id))
        if doc is None:
            raise NotFound(f"execution {execution_id}")
        return dict(doc.data)

    def list(self, workflow: str, state: str | None = None) -> list[Execution]:
        query = Query(records.EXECUTIONS).where("workflow", "==", workflow)
        if state is not None:
            query = query.where("state", "==", state)
        found = [records.to_execution(dict(d.data)) for d in self.store.query(query)]
        return sorted(found, key=lambda e: e.start_time, reverse=True)

    def cancel(self, execution_id: str) -> Execution:
        return self._on_loop(self._cancel(execution_id))

    async def _cancel(self, execution_id: str) -> Execution:
        doc = self._document(execution_id)
        if doc["state"] != "ACTIVE":
            return records.to_execution(doc)
        run = self._runs.pop(execution_id, None)
        if run is not None:
            run.task.cancel()
            with contextlib.suppress(BaseException):
                await run.task
            self.commits.flush()  # its history up to the cancel, then nothing more from it
            run.stored.close()
        doc = self._document(execution_id)
        doc.update(
            state="CANCELLED",
            end_time=self.clock.now(),
            error=records.error_payload("Execution cancelled", "cancelled", []),
        )
        self.store.set(records.execution_path(execution_id), doc)
        return records.to_execution(doc)

    def send_callback(self, callback_url: str, body: Mapping[str, Any]) -> None:
        self.deliver_callback(callback_url, "POST", body, {"content-type": "application/json"}, {})

    def deliver_callback(
        self, url: str, method: str, body: Any, headers: Mapping[str, str], query: Mapping[str, Any]
    ) -> None:
        """Queue one request on a callback endpoint. NotFound if the endpoint or its execution is
        gone or finished; Conflict (HTTP 429) if an earlier request is still unconsumed."""
        self._on_loop(self._deliver(url, method, body, dict(headers), dict(query)))

    async def _deliver(
        self, url: str, method: str, body: Any, headers: dict[str, str], query: dict[str, Any]
    ) -> None:
        execution_id, callback_id = parse_callback_url(url)
        # accepted against committed state: a request taken this turn must count as consumed
        self.commits.flush()
        # one this engine is running is active; only another one is looked up (a whole read of
        # its state tree)
        run = self._runs.get(execution_id)
        if (run is None or run.stored.closed) and self._document(execution_id)["state"] != "ACTIVE":
            raise NotFound(f"execution {execution_id} is not active")
        path = records.callback_path(execution_id, callback_id)
        doc = self.store.get(path)
        if doc is None:
            raise NotFound(f"callback {callback_id} of execution {execution_id}")
        requests = list(doc.data.get("requests", []))
        if len(requests) > int(doc.data.get("consumed", 0)):
            raise Conflict("a callback request is already queued and not yet received")
        if doc.data.get("method") not in (method, None) and method != "HEAD":
            raise ValidationError(f"callback expects {doc.data.get('method')}, got {method}")
        requests.append(
            {
                "http_request": {
                    "body": body,
                    "headers": headers,
                    "method": method,
                    "query": query,
                    "url": urlparse(url).path,
                },
                "received_time": records.iso(self.clock.now()),
                "type": "HTTP",
            }
        )
        self.store.update(path, {"requests": requests})
        run = self._runs.get(execution_id)
        if run is not None:
            run.notify(callback_id)

    # extras: history, waiting -------------------------------------------------------------------

    def steps(self, execution_id: str) -> builtins.list[dict[str, Any]]:
        """The step history: one entry per finished (or failed) step, in order."""
        self._document(execution_id)
        docs = self.store.query(Query(records.steps_collection(execution_id)))
        return [dict(d.data) for d in sorted(docs, key=lambda d: d.path)]

    def wait(self, execution_id: str, timeout: float = 30.0) -> Execution:
        """Block until the execution ends (tests and the CLI); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            execution = self.get(execution_id)
            if execution.state != "ACTIVE":
                return execution
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still ACTIVE after {timeout} s")
            time.sleep(0.005)

    def running(self) -> Iterator[str]:
        return iter(list(self._runs))


def parse_callback_url(url: str) -> tuple[str, str]:
    """``…/v1/callbacks/{execution}/{callback}`` → (execution, callback)."""
    parts = urlparse(url).path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "callbacks":
        raise NotFound(f"not a callback URL: {url}")
    return parts[-2], parts[-1]
