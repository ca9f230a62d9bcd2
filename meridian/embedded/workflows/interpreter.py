"""The interpreter: walks the compiled step tree with a persisted record at every level.

Every construct keeps its progress in a plain dict inside the execution's state tree (a block
its step index, a loop its position, a try its attempt and backoff deadline, a wait its deadline,
a parallel step one record per branch). Re-running the interpreter over a saved tree therefore
resumes where it stopped: each level reads its record instead of starting afresh. The state is
saved after every step (committed in groups, each parallel branch in a document of its own: see
``checkpoints``); a step interrupted mid-way (an HTTP call in flight) is run again.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .checkpoints import Branch, inside
from .clock import Clock
from .definition import (
    MISSING,
    AssignStep,
    Block,
    CallStep,
    ForStep,
    ParallelStep,
    Program,
    RaiseStep,
    ReturnStep,
    Step,
    StepsStep,
    SwitchStep,
    TryStep,
    Workflow,
)
from .errors import WorkflowError, builtin, type_error, value_error
from .expressions import PredicateRef, evaluation_error, is_number, type_name
from .frames import Frame, FrameScope
from .stdlib import BUILTIN_PREDICATES, call_function

MAX_CALL_DEPTH = 20
MAX_PARALLEL_NESTING = 2
MAX_CONCURRENT_BRANCHES = 20
MAX_STEPS = 100_000
MAX_BRANCH_ERRORS = 100
DEFAULT_CALLBACK_TIMEOUT = 43200.0


class Host(Protocol):
    """What the interpreter needs from the engine: time, env, persistence and effects."""

    clock: Clock

    def env(self, name: str) -> str | None: ...

    def now(self) -> float: ...

    def save(self, entry: dict[str, Any] | None = None) -> None:
        """Record that the state moved on, with an optional step-history entry; committed by
        the end of the event-loop turn."""

    async def http(self, function: str, args: dict[str, Any]) -> dict[str, Any]:
        """Sent only once every earlier save is committed."""

    async def run_job(self, args: dict[str, Any], rec: dict[str, Any]) -> Any:
        """``googleapis.run.v2.projects.locations.jobs.run`` (``cloud_run``); ``rec`` is the
        step's record, where it keeps the job execution it started."""

    def log(self, args: dict[str, Any]) -> None: ...

    def create_callback(self, method: str) -> dict[str, Any]: ...

    def callback_position(self, url: str) -> tuple[str, int]:
        """The callback id for ``url`` and how many of its requests are already consumed."""

    def take_callback(self, callback_id: str, index: int) -> dict[str, Any] | None:
        """Request number ``index`` if it has arrived; consumed with the next save."""

    async def wait_callback(self, callback_id: str, seconds: float) -> None:
        """Return when a request may have arrived, or after ``seconds``."""


@dataclass(frozen=True)
class Jump:
    """Control leaving a block: ``next`` (to a step name), ``return``, ``break``, ``continue``."""

    kind: str
    target: str | None = None
    value: Any = None


class _Abort(Exception):
    """A branch failed and the parallel step's policy stops the others."""


class Interpreter:
    def __init__(self, program: Program, state: dict[str, Any], host: Host) -> None:
        self.program = program
        self.state = state
        self.host = host

    # entry ------------------------------------------------------------------------------------

    @staticmethod
    def initial_state(program: Program, argument: Any) -> dict[str, Any]:
        main = program.workflows["main"]
        variables = {main.params[0][0]: argument} if main.params else {}
        return {"frame": {"vars": variables, "b": {}}, "steps": 0}

    async def run(self) -> Any:
        """Run ``main`` to its end; returns its result or raises WorkflowError."""
        main = self.program.workflows["main"]
        frame = Frame(self.state["frame"]["vars"], "main")
        jump = await self.block(frame, main.body, self.state["frame"]["b"])
        return jump.value if jump is not None and jump.kind == "return" else None

    # evaluation -------------------------------------------------------------------------------

    def eval(self, value: Callable[[Any], Any], frame: Frame) -> Any:
        try:
            return value(FrameScope(frame, self.host))
        except WorkflowError:
            raise
        except RecursionError as e:
            raise builtin("RecursionError", str(e)) from e
        except Exception as e:
            raise evaluation_error(e) from e

    # blocks and steps -------------------------------------------------------------------------

    async def block(self, frame: Frame, block: Block, rec: dict[str, Any]) -> Jump | None:
        i = rec.setdefault("i", 0)
        while i < len(block.steps):
            step = block.steps[i]
            child = rec.setdefault("c", {})
            try:
                jump = await self.step(frame, step, child)
            except WorkflowError as e:
                if not getattr(e, "recorded", False):
                    e.recorded = True  # type: ignore[attr-defined]
                    self.host.save(self._entry(frame, step, "FAILED", e.value))
                raise
            if jump is None and step.next is not None:
                jump = Jump("next", step.next)
            if jump is not None and jump.kind == "next":
                if jump.target == "end":
                    jump = Jump("return", value=None)
                elif jump.target in ("break", "continue"):
                    jump = Jump(str(jump.target))
                elif jump.target in block.index:
                    i, jump = block.index[jump.target], None
                    i -= 1  # undone by the increment below
            if jump is None:
                i += 1
            rec["i"], rec["c"] = i, {}
            self._count()
            self.host.save(self._entry(frame, step, "SUCCEEDED"))
            if jump is not None:
                return jump
        return None

    def _count(self) -> None:
        self.state["steps"] = self.state.get("steps", 0) + 1
        if self.state["steps"] > MAX_STEPS:
            raise builtin("ResourceLimitError", f"more than {MAX_STEPS} steps in one execution")

    def _entry(self, frame: Frame, step: Step, state: str, error: Any = None) -> dict[str, Any]:
        entry = {
            "step": step.name,
            "routine": frame.workflow,
            "line": step.line,
            "state": state,
            "time": self.host.now(),
        }
        if error is not None:
            entry["error"] = error
        return entry

    async def step(self, frame: Frame, step: Step, rec: dict[str, Any]) -> Jump | None:
        if isinstance(step, AssignStep):
            scope = FrameScope(frame, self.host)
            for name, accessors, value in step.assignments:
                result = self.eval(value, frame)
                try:
                    frame.assign(name, accessors, result, scope)
                except WorkflowError:
                    raise
                except Exception as e:
                    raise evaluation_error(e) from e
            return None
        if isinstance(step, CallStep):
            return await self.call(frame, step, rec)
        if isinstance(step, SwitchStep):
            return await self.switch(frame, step, rec)
        if isinstance(step, ReturnStep):
            return Jump("return", value=self.eval(step.value, frame) if step.value else None)
        if isinstance(step, RaiseStep):
            raise WorkflowError(self.eval(step.value, frame))
        if isinstance(step, StepsStep):
            return await self.block(frame, step.body, rec)
        if isinstance(step, TryStep):
            return await self.try_(frame, step, rec)
        if isinstance(step, ForStep):
            return await self.for_(frame, step, rec)
        if isinstance(step, ParallelStep):
            return await self.parallel(frame, step, rec)
        return None  # a step with only `next`

    async def switch(self, frame: Frame, step: SwitchStep, rec: dict[str, Any]) -> Jump | None:
        if "k" not in rec:
            rec["k"] = -1
            for k, condition in enumerate(step.conditions):
                matched = self.eval(condition.condition, frame)
                if not isinstance(matched, bool):
                    raise type_error(
                        f"switch condition must be a boolean, got {type_name(matched)}"
                    )
                if matched:
                    rec["k"] = k
                    break
        if rec["k"] < 0:
            return None
        chosen = step.conditions[rec["k"]]
        if chosen.body is not None:
            jump = await self.block(frame, chosen.body, rec.setdefault("b", {}))
            if jump is not None:
                return jump
        return Jump("next", chosen.next) if chosen.next else None

    # calls ------------------------------------------------------------------------------------

    async def call(self, frame: Frame, step: CallStep, rec: dict[str, Any]) -> Jump | None:
        if step.kind == "subworkflow":
            if "f" not in rec:
                args = {k: self.eval(v, frame) for k, v in step.args.items()}
                rec["f"] = {
                    "vars": self._bind(self.program.workflows[step.function], args),
                    "b": {},
                }
            result = await self.subworkflow(frame, step.function, rec["f"])
        elif step.kind == "function":
            values = [self.eval(v, frame) for v in step.args.values()]
            try:
                result = call_function(step.function, self._positional(step, values), self.host)
            except WorkflowError:
                raise
            except Exception as e:
                raise evaluation_error(e) from e
        else:
            result = await self.effect(frame, step, rec)
        if step.result:
            frame.set(step.result, result)
        return None

    @staticmethod
    def _positional(step: CallStep, values: list[Any]) -> list[Any]:
        from .stdlib import FUNCTIONS

        named = dict(zip(step.args, values, strict=True))
        params = FUNCTIONS[step.function].params
        positional = [named[p] for p in params if p in named]
        return positional

    def _bind(self, workflow: Workflow, args: dict[str, Any]) -> dict[str, Any]:
        names = {p for p, _ in workflow.params}
        for key in args:
            if key not in names:
                raise type_error(f"{workflow.name} has no param {key}")
        bound = {}
        for name, default in workflow.params:
            if name in args:
                bound[name] = args[name]
            elif default is not MISSING:
                bound[name] = copy.deepcopy(default)
            else:
                raise type_error(f"{workflow.name} needs param {name}")
        return bound

    async def subworkflow(self, caller: Frame, name: str, rec: dict[str, Any]) -> Any:
        if caller.depth + 1 > MAX_CALL_DEPTH:
            raise builtin("RecursionError", f"call stack deeper than {MAX_CALL_DEPTH}")
        frame = Frame(rec["vars"], name, caller.depth + 1, parallel_depth=caller.parallel_depth)
        jump = await self.block(frame, self.program.workflows[name].body, rec["b"])
        return jump.value if jump is not None and jump.kind == "return" else None

    async def effect(self, frame: Frame, step: CallStep, rec: dict[str, Any]) -> Any:
        args = {k: self.eval(v, frame) for k, v in step.args.items()}
        name = step.function
        if name.startswith("http."):
            return await self.host.http(name, args)
        if name.startswith("googleapis."):
            return await self.host.run_job(args, rec)
        if name == "sys.log":
            self.host.log(args)
            return None
        if name in ("sys.sleep", "sys.sleep_until"):
            if "until" not in rec:
                if name == "sys.sleep":
                    seconds = args["seconds"]
                    if not is_number(seconds) or seconds < 0:
                        raise value_error("sys.sleep needs a non-negative number of seconds")
                    rec["until"] = self.host.now() + seconds
                else:
                    rec["until"] = call_function("time.parse", [args["time"]], self.host)
                self.host.save()
            await self.host.clock.sleep(rec["until"] - self.host.now())
            return None
        if name == "events.create_callback_endpoint":
            method = args.get("http_callback_method", "POST")
            if method not in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
                raise value_error(f"unsupported http_callback_method {method!r}")
            return self.host.create_callback(str(method))
        return await self.await_callback(args, rec)

    async def await_callback(self, args: dict[str, Any], rec: dict[str, Any]) -> Any:
        callback = args["callback"]
        if not isinstance(callback, dict) or not isinstance(callback.get("url"), str):
            raise type_error(
                "events.await_callback needs the map create_callback_endpoint returned"
            )
        if "cb" not in rec:
            timeout = args.get("timeout", DEFAULT_CALLBACK_TIMEOUT)
            if not is_number(timeout) or timeout < 0:
                raise value_error("events.await_callback timeout must be a non-negative number")
            rec["cb"], rec["idx"] = self.host.callback_position(callback["url"])
            rec["deadline"] = self.host.now() + timeout
            self.host.save()
        while True:
            request = self.host.take_callback(rec["cb"], rec["idx"])
            if request is not None:
                return request
            remaining = rec["deadline"] - self.host.now()
            if remaining <= 0:
                raise builtin("TimeoutError", "timeout waiting for callback")
            await self.host.wait_callback(rec["cb"], remaining)

    # try / retry / except -----------------------------------------------------------------------

    async def try_(self, frame: Frame, step: TryStep, rec: dict[str, Any]) -> Jump | None:
        rec.setdefault("phase", "try")
        rec.setdefault("attempt", 0)
        while rec["phase"] == "try":
            if "until" in rec:
                await self.host.clock.sleep(rec["until"] - self.host.now())
                del rec["until"]
            try:
                return await self.block(frame, step.body, rec.setdefault("b", {}))
            except WorkflowError as e:
                delay = await self._retry_delay(frame, step, rec["attempt"], e.value)
                if delay is not None:
                    rec["attempt"] += 1
                    rec["until"], rec["b"] = self.host.now() + delay, {}
                    self.host.save()
                    continue
                if step.except_body is None:
                    raise
                rec["phase"], rec["b"] = "except", {}
                if step.except_as:
                    frame.set(step.except_as, e.value)
                self.host.save()
        assert step.except_body is not None
        return await self.block(frame, step.except_body, rec.setdefault("b", {}))

    async def _retry_delay(
        self, frame: Frame, step: TryStep, attempt: int, error: Any
    ) -> float | None:
        """The delay before the next attempt, or None when the policy stops retrying."""
        if step.retry is None:
            return None
        policy = self.eval(step.retry, frame)
        if not isinstance(policy, dict):
            raise type_error(f"retry policy must be a map, got {type_name(policy)}")
        max_retries = policy.get("max_retries", 0)
        if not isinstance(max_retries, int) or attempt >= max_retries:
            return None
        if not await self._predicate(frame, policy.get("predicate"), error):
            return None
        backoff = policy.get("backoff") or {}
        initial = backoff.get("initial_delay", 1)
        multiplier = backoff.get("multiplier", 1.25)
        maximum = backoff.get("max_delay", 60)
        for name, value in (
            ("initial_delay", initial),
            ("multiplier", multiplier),
            ("max_delay", maximum),
        ):
            if not is_number(value):
                raise type_error(f"retry backoff {name} must be a number")
        return float(min(initial * multiplier**attempt, maximum))

    async def _predicate(self, frame: Frame, predicate: Any, error: Any) -> bool:
        if not isinstance(predicate, PredicateRef):
            raise type_error("retry predicate must be a predicate or a subworkflow")
        if predicate.builtin:
            return BUILTIN_PREDICATES[predicate.name](error)
        # a custom predicate: a one-param subworkflow run to completion here; it has no effects,
        # so it is not checkpointed (a restart re-evaluates it)
        workflow = self.program.workflows[predicate.name]
        if len(workflow.params) != 1:
            raise type_error(f"retry predicate {workflow.name} must take exactly one param")
        record = {"vars": {workflow.params[0][0]: error}, "b": {}}
        result = await self.subworkflow(frame, workflow.name, record)
        if not isinstance(result, bool):
            raise type_error(f"retry predicate {workflow.name} must return a boolean")
        return result

    # for ----------------------------------------------------------------------------------------

    def _loop_items(self, frame: Frame, step: ForStep) -> dict[str, Any]:
        if step.items is not None:
            items = self.eval(step.items, frame)
            if not isinstance(items, list):
                raise type_error(f"for: `in` needs a list, got {type_name(items)} (use keys())")
            return {"items": copy.deepcopy(items)}
        bounds = self.eval(step.range, frame) if step.range else None
        if not isinstance(bounds, list) or len(bounds) != 2 or not all(map(is_number, bounds)):
            raise type_error("for: `range` needs a list of two numbers")
        return {"lo": bounds[0], "hi": bounds[1]}

    @staticmethod
    def _loop_length(rec: dict[str, Any]) -> int:
        if "items" in rec:
            return len(rec["items"])
        return max(0, int(rec["hi"] - rec["lo"]) + 1)

    @staticmethod
    def _loop_vars(step: ForStep, rec: dict[str, Any], pos: int) -> dict[str, Any]:
        value = rec["items"][pos] if "items" in rec else rec["lo"] + pos
        bound = {step.value: copy.deepcopy(value)} if step.value else {}
        if step.index:
            bound[step.index] = pos
        return bound

    async def for_(self, frame: Frame, step: ForStep, rec: dict[str, Any]) -> Jump | None:
        if "pos" not in rec:
            rec.update(self._loop_items(frame, step))
            rec["pos"], rec["outer"], rec["b"] = 0, sorted(frame.vars), {}
        outer = set(rec["outer"])
        jump: Jump | None = None
        while rec["pos"] < self._loop_length(rec):
            if not rec["b"]:
                frame.vars.update(self._loop_vars(step, rec, rec["pos"]))
            jump = await self.block(frame, step.body, rec["b"])
            if jump is not None and jump.kind not in ("break", "continue"):
                break
            if jump is not None and jump.kind == "break":
                jump = None
                break
            jump = None
            rec["pos"], rec["b"] = rec["pos"] + 1, {}
        # variables first created inside the loop do not outlive it (reference §6.2)
        for name in [n for n in frame.vars if n not in outer]:
            del frame.vars[name]
        return jump

    # parallel -----------------------------------------------------------------------------------

    async def parallel(self, frame: Frame, step: ParallelStep, rec: dict[str, Any]) -> Jump | None:
        if frame.parallel_depth + 1 > MAX_PARALLEL_NESTING:
            raise builtin(
                "ParallelNestingError", f"parallel steps nested deeper than {MAX_PARALLEL_NESTING}"
            )
        if "br" not in rec:
            for name in step.shared:
                if not frame.has(name):
                    raise builtin(
                        "KeyError", f"shared variable {name} must exist before the parallel step"
                    )
            if step.loop is not None:
                rec.update(self._loop_items(frame, step.loop))
                count = self._loop_length(rec)
                rec["br"] = [
                    Branch(
                        {
                            "id": str(i),
                            "vars": frame.branch(step.shared, self._loop_vars(step.loop, rec, i)),
                            "b": {},
                            "done": False,
                        }
                    )
                    for i in range(count)
                ]
            else:
                assert step.branches is not None
                rec["br"] = [
                    Branch({"id": name, "vars": frame.branch(step.shared), "b": {}, "done": False})
                    for name, _ in step.branches
                ]
            self.host.save()
        else:  # saved before branches had documents of their own
            rec["br"] = [b if isinstance(b, Branch) else Branch(b) for b in rec["br"]]
        limit = MAX_CONCURRENT_BRANCHES
        if step.concurrency_limit is not None:
            wanted = self.eval(step.concurrency_limit, frame)
            if not isinstance(wanted, int) or wanted < 1:
                raise value_error("concurrency_limit must be a positive integer")
            limit = min(limit, wanted)
        gate = asyncio.Semaphore(limit)
        shared = frozenset(step.shared)
        failures: list[tuple[str, WorkflowError]] = []

        async def run_branch(branch: Branch, body: Block) -> None:
            async with gate:
                child = Frame(
                    branch["vars"],
                    frame.workflow,
                    frame.depth,
                    frame,
                    shared,
                    frame.parallel_depth + 1,
                )
                with inside(branch):
                    try:
                        await self.block(child, body, branch["b"])
                    except WorkflowError as e:
                        branch["error"], branch["done"] = e.value, True
                        failures.append((branch["id"], e))
                        self.host.save()
                        if not step.continue_all or len(failures) >= MAX_BRANCH_ERRORS:
                            raise _Abort() from e
                        return
                    # only a branch that ran to its end is done: a cancelled one resumes on restart
                    branch["done"] = True
                    self.host.save()

        bodies = [b for _, b in step.branches] if step.branches else None
        for branch in rec["br"]:
            if branch["done"] and "error" in branch:
                failures.append((branch["id"], WorkflowError(branch["error"])))
        if failures and not step.continue_all:
            raise failures[0][1]
        try:
            async with asyncio.TaskGroup() as group:
                for i, branch in enumerate(rec["br"]):
                    if not branch["done"]:
                        body = bodies[i] if bodies else step.loop.body  # type: ignore[union-attr]
                        group.create_task(run_branch(branch, body))
        except* _Abort:
            pass
        if failures and not step.continue_all:
            raise failures[0][1]
        if failures:
            raise WorkflowError(
                {
                    "message": f"UnhandledBranchError: {len(failures)} branch(es) or iteration(s) "
                    "raised an unhandled error",
                    "tags": ["UnhandledBranchError"],
                    "branches": [{"id": bid, "error": e.value} for bid, e in failures],
                    "truncated": len(failures) >= MAX_BRANCH_ERRORS,
                }
            )
        return None
