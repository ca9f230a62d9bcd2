"""One running execution: the interpreter's Host (persistence, env, effects, callbacks)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from meridian.domain.errors import NotFound

from . import records
from .checkpoints import StoredState, Write
from .clock import Clock
from .definition import Program
from .effects import http_call
from .errors import WorkflowError, builtin, describe
from .interpreter import Interpreter

if TYPE_CHECKING:
    from .engine import WorkflowEngine

log = logging.getLogger("meridian.workflows")
# A waiting execution also re-reads its callback this often, to see requests written by
# another process straight into the store.
CALLBACK_POLL_SECONDS = 1.0
_SEVERITIES = {
    "DEFAULT",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
}


class ExecutionRun:
    task: asyncio.Task[None]

    def __init__(self, engine: WorkflowEngine, doc: dict[str, Any], program: Program) -> None:
        self.engine = engine
        self.doc = doc
        self.execution_id: str = doc["execution_id"]
        self.clock: Clock = engine.clock
        self.stored = StoredState(engine.store, doc, engine.commits, self._abandon)
        self.interpreter = Interpreter(program, self.stored.tree, self)
        self._pending: list[Write] = []
        self._consumed: dict[str, int] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._log: list[dict[str, Any]] = []

    @staticmethod
    def new_document(
        program: Program,
        execution_id: str,
        workflow: str,
        revision: str,
        argument: dict[str, Any],
        now: float,
    ) -> dict[str, Any]:
        state = Interpreter.initial_state(program, argument)
        return {
            "execution_id": execution_id,
            "workflow": workflow,
            "revision": revision,
            "state": "ACTIVE",
            "argument": argument,
            "start_time": now,
            "end_time": None,
            "result": None,
            "error": None,
            "state_tree": records.dump_state(state),
            "history": 0,
            "callbacks": 0,
        }

    @property
    def path(self) -> str:
        return records.execution_path(self.execution_id)

    # running ------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            result = await self.interpreter.run()
        except WorkflowError as e:
            self._finish(
                "FAILED", error=records.error_payload(e.value, describe(e.value), self._stack(e))
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an engine bug must fail the execution, not hang it
            log.exception("workflow execution %s crashed", self.execution_id)
            value = builtin("SystemError", f"{type(e).__name__}: {e}").value
            self._finish("FAILED", error=records.error_payload(value, str(e), []))
            return
        self._finish("SUCCEEDED", result=records.dump_state(result))

    def _stack(self, error: WorkflowError) -> list[dict[str, Any]]:
        if "step" not in self.doc.get("last_failure", {}):
            return []
        failure = self.doc["last_failure"]
        return [
            {
                "step": failure["step"],
                "routine": failure["routine"],
                "position": {"line": failure["line"]},
            }
        ]

    def _finish(self, state: str, result: str | None = None, error: Any = None) -> None:
        self.doc.update(state=state, result=result, error=error, end_time=self.clock.now())
        self.save()
        self.engine.commits.flush()  # reported only once committed
        if self.stored.closed:
            return  # the commit failed: _abandon recorded why
        self.stored.close()
        log.info(
            "workflow execution %s %s",
            self.execution_id,
            state,
            extra={"json_fields": {"execution": self.execution_id, "state": state}},
        )

    # Host: time, env, persistence --------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def env(self, name: str) -> str | None:
        builtins = {
            "GOOGLE_CLOUD_PROJECT_ID": self.engine.project,
            "GOOGLE_CLOUD_PROJECT_NUMBER": "0",
            "GOOGLE_CLOUD_LOCATION": self.engine.location,
            "GOOGLE_CLOUD_WORKFLOW_ID": self.doc["workflow"],
            "GOOGLE_CLOUD_WORKFLOW_REVISION_ID": self.doc["revision"],
            "GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID": self.execution_id,
        }
        return builtins.get(name, self.engine.env.get(name))

    def save(self, entry: dict[str, Any] | None = None) -> None:
        writes: list[Write] = []
        if entry is not None:
            if self._log:
                entry["log"] = self._log
                self._log = []
            if entry.get("state") == "FAILED":
                self.doc["last_failure"] = {k: entry[k] for k in ("step", "routine", "line")}
                entry["error"] = records.plain(entry["error"])
            self.doc["history"] = int(self.doc.get("history", 0)) + 1
            entry["seq"] = self.doc["history"]
            writes.append(("set", records.step_path(self.execution_id, entry["seq"]), entry))
        writes.extend(self._pending)
        self._pending = []
        self.stored.save(writes)

    def _abandon(self, error: Exception) -> None:
        """Its state could not be committed: fail the execution where its last commit left it."""
        log.error(
            "workflow execution %s: state not committed: %s",
            self.execution_id,
            error,
            exc_info=error,
            extra={"json_fields": {"execution": self.execution_id}},
        )
        value = builtin("SystemError", f"{type(error).__name__}: {error}").value
        ending = {
            "state": "FAILED",
            "end_time": self.clock.now(),
            "error": records.error_payload(value, str(error), []),
        }
        self.doc.update(ending)
        try:
            self.engine.store.update(self.path, ending)
        except Exception:
            log.exception("workflow execution %s: could not record its failure", self.execution_id)
        self.task.cancel()

    # Host: effects ------------------------------------------------------------------------------

    async def http(self, function: str, args: dict[str, Any]) -> dict[str, Any]:
        await self.stored.durable()  # the request may depend on any step saved before it
        return await http_call(function, args, self.engine.transport, self.engine.oidc_token)

    async def run_job(self, args: dict[str, Any], rec: dict[str, Any]) -> Any:
        return await self.engine.cloud_run.run(args, rec, self)

    async def durable(self) -> None:
        await self.stored.durable()

    def log(self, args: dict[str, Any]) -> None:
        severity = str(args.get("severity", "DEFAULT")).upper()
        if severity not in _SEVERITIES:
            raise builtin("ValueError", f"sys.log: unknown severity {severity}")
        payload = args.get("json", args.get("data", args.get("text")))
        entry = {"severity": severity, "payload": records.plain(payload)}
        self._log.append(entry)
        level = {"DEBUG": 10, "WARNING": 30, "ERROR": 40}.get(
            severity, 50 if severity in ("CRITICAL", "ALERT", "EMERGENCY") else 20
        )
        log.log(
            level,
            json.dumps(entry["payload"]) if not isinstance(payload, str) else payload,
            extra={"json_fields": {"execution": self.execution_id}},
        )

    def create_callback(self, method: str) -> dict[str, Any]:
        # ids are a per-execution counter, so re-running an interrupted step recreates the same
        # endpoint instead of leaking a second one
        self.doc["callbacks"] = int(self.doc.get("callbacks", 0)) + 1
        callback_id = f"cb{self.doc['callbacks']}"
        url = f"{self.engine.base_url}/v1/callbacks/{self.execution_id}/{callback_id}"
        path = records.callback_path(self.execution_id, callback_id)
        if self.engine.store.get(path) is None:
            self.engine.store.set(
                path,
                {
                    "execution_id": self.execution_id,
                    "callback_id": callback_id,
                    "method": method,
                    "url": url,
                    "requests": [],
                    "consumed": 0,
                    "created": self.now(),
                },
            )
        return {"url": url}

    def callback_position(self, url: str) -> tuple[str, int]:
        from .engine import parse_callback_url

        try:
            execution_id, callback_id = parse_callback_url(url)
        except NotFound:
            raise builtin("ValueError", f"not a callback URL: {url}") from None
        doc = self.engine.store.get(records.callback_path(execution_id, callback_id))
        if execution_id != self.execution_id or doc is None:
            raise builtin("ValueError", "only the execution that created a callback can await it")
        # a request taken earlier in this turn is consumed in the store only once committed
        stored = int(doc.data.get("consumed", 0))
        return callback_id, max(stored, self._consumed.get(callback_id, 0))

    def take_callback(self, callback_id: str, index: int) -> dict[str, Any] | None:
        path = records.callback_path(self.execution_id, callback_id)
        doc = self.engine.store.get(path)
        requests = doc.data.get("requests", []) if doc is not None else []
        if index >= len(requests):
            return None
        # marked consumed in the same write that saves the step's result
        self._pending.append(("update", path, {"consumed": index + 1}))
        self._consumed[callback_id] = index + 1
        request: dict[str, Any] = records.load_state(records.dump_state(requests[index]))
        return request

    async def wait_callback(self, callback_id: str, seconds: float) -> None:
        event = self._events.setdefault(callback_id, asyncio.Event())
        event.clear()
        arrived = asyncio.ensure_future(event.wait())
        expired = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait(
                {arrived, expired},
                timeout=CALLBACK_POLL_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in (arrived, expired):
                waiter.cancel()

    def notify(self, callback_id: str) -> None:
        self._events.setdefault(callback_id, asyncio.Event()).set()
