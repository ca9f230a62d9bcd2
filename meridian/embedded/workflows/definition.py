"""Load-time compilation of a workflow file into a step tree, refusing — with the construct's
name and line — everything the engine does not run, so a file that loads is a file that runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import DefinitionError
from .expressions import (
    Accessor,
    Expr,
    ExpressionSyntaxError,
    PredicateRef,
    Scope,
    compile_target,
    compile_value,
    is_expression,
)
from .source import LineList, LineMap, line_of, load_source
from .stdlib import FUNCTIONS

Value = Callable[[Scope], Any]
MISSING: Any = object()

HTTP_ARGS = (
    "url",
    "headers",
    "body",
    "query",
    "auth",
    "timeout",
    "private_service_name",
    "ca_certificate",
)
# Call steps with effects or waits, and the argument names each accepts (reference §6.7).
EFFECTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{f"http.{m}": (HTTP_ARGS, ("url",)) for m in ("get", "post", "put", "patch", "delete")},
    "http.request": (("method", *HTTP_ARGS), ("method", "url")),
    "sys.log": (("data", "text", "json", "severity", "timestamp"), ()),
    "sys.sleep": (("seconds",), ("seconds",)),
    "sys.sleep_until": (("time",), ("time",)),
    "events.create_callback_endpoint": (("http_callback_method",), ()),
    "events.await_callback": (("callback", "timeout"), ("callback",)),
    # the Cloud Run Admin API connector (cloud_run.py)
    "googleapis.run.v2.projects.locations.jobs.run": (
        ("name", "location", "body", "connector_params"),
        ("name", "body"),
    ),
}
LIMIT_ASSIGNMENTS = 50
LIMIT_CONDITIONS = 50
LIMIT_BRANCHES = 10


@dataclass
class Step:
    name: str
    line: int
    next: str | None


@dataclass
class Block:
    steps: list[Step]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {s.name: i for i, s in enumerate(self.steps)}


@dataclass
class AssignStep(Step):
    assignments: list[tuple[str, list[Accessor], Value]]


@dataclass
class CallStep(Step):
    """``call:`` of an effect (``kind="effect"``), a pure standard function, or a subworkflow."""

    function: str
    kind: str
    args: dict[str, Value]
    result: str | None


@dataclass
class Condition:
    line: int
    condition: Value
    next: str | None
    body: Block | None


@dataclass
class SwitchStep(Step):
    conditions: list[Condition]


@dataclass
class ReturnStep(Step):
    value: Value | None


@dataclass
class RaiseStep(Step):
    value: Value


@dataclass
class StepsStep(Step):
    body: Block


@dataclass
class TryStep(Step):
    body: Block
    retry: Value | None
    except_as: str | None
    except_body: Block | None


@dataclass
class ForStep(Step):
    value: str
    index: str | None
    items: Value | None
    range: Value | None
    body: Block


@dataclass
class ParallelStep(Step):
    shared: list[str]
    concurrency_limit: Value | None
    continue_all: bool
    branches: list[tuple[str, Block]] | None
    loop: ForStep | None


@dataclass
class Workflow:
    name: str
    line: int
    params: list[tuple[str, Any]]
    body: Block


@dataclass
class Program:
    """A compiled workflow file: ``main`` plus its subworkflows."""

    name: str
    source: str
    workflows: dict[str, Workflow]


@dataclass
class _Context:
    """Where the compiler is: for refusals and for checking jumps and loop controls."""

    workflow: str
    names: set[str]
    scopes: list[set[str]] = field(default_factory=list)
    in_loop: bool = False
    in_branch: bool = False


def load_program(name: str, text: str) -> Program:
    """Compile a workflow file; raises DefinitionError naming the construct and its line."""
    document = load_source(text)
    if isinstance(document, LineList):
        document = _implicit_main(document)
    for wf_name, wf in document.items():
        if not isinstance(wf, LineMap):
            raise DefinitionError(
                f"workflow {wf_name!r} must be a map with steps (line {document.line_of(wf_name)})"
            )
    names = set(document)
    if "main" not in names:
        raise DefinitionError("the file has no `main` workflow (line 1)")
    workflows = {wf_name: _workflow(wf_name, body, names) for wf_name, body in document.items()}
    if len(workflows["main"].params) > 1:
        raise DefinitionError(f"`main` takes at most one param (line {workflows['main'].line})")
    return Program(name, text, workflows)


def _implicit_main(steps: LineList) -> LineMap:
    main = LineMap(steps=steps)
    main.line, main.key_lines = steps.line, {"steps": steps.line}
    top = LineMap(main=main)
    top.line, top.key_lines = steps.line, {"main": steps.line}
    return top


def _refuse(what: str, line: int) -> DefinitionError:
    return DefinitionError(f"unsupported construct `{what}` at line {line}")


def _check_keys(node: LineMap, allowed: set[str], where: str) -> None:
    for key in node:
        if key not in allowed:
            raise _refuse(f"{where}.{key}" if where else key, node.line_of(key))


def _workflow(name: str, node: LineMap, names: set[str]) -> Workflow:
    _check_keys(node, {"params", "steps"}, "")
    params: list[tuple[str, Any]] = []
    for param in node.get("params") or []:
        if isinstance(param, str):
            params.append((param, MISSING))
        elif isinstance(param, dict) and len(param) == 1:
            ((pname, default),) = param.items()
            params.append((str(pname), default))
        else:
            raise _refuse("params entry", line_of(node.get("params"), node.line))
    if "steps" not in node:
        raise DefinitionError(f"workflow {name!r} has no steps (line {node.line})")
    ctx = _Context(name, names)
    return Workflow(name, node.line, params, _block(node["steps"], ctx, node.line_of("steps")))


def _block(raw: Any, ctx: _Context, line: int) -> Block:
    if not isinstance(raw, list) or not raw:
        raise DefinitionError(f"`steps` must be a non-empty list (line {line})")
    entries: list[tuple[str, LineMap, int]] = []
    for entry in raw:
        if not isinstance(entry, LineMap) or len(entry) != 1:
            raise DefinitionError(
                f"a step is a map of one name to its body (line {line_of(entry, line)})"
            )
        ((step_name, body),) = entry.items()
        if not isinstance(body, LineMap):
            raise DefinitionError(f"step {step_name!r} has no body (line {entry.line})")
        entries.append((step_name, body, entry.line))
    names = {n for n, _, _ in entries}
    if len(names) != len(entries):
        raise DefinitionError(f"duplicate step names in the list at line {line}")
    ctx.scopes.append(names)
    try:
        steps = [_step(n, b, ln, ctx) for n, b, ln in entries]
    finally:
        ctx.scopes.pop()
    return Block(steps)


def _value(raw: Any, ctx: _Context, line: int) -> Value:
    found: list[Expr] = []
    try:
        value = compile_value(raw, found)
    except ExpressionSyntaxError as e:
        raise DefinitionError(f"expression syntax error at line {line}: {e}") from e
    for expr in found:
        _check_expression(expr, ctx, line)
    return value


def _check_expression(expr: Expr, ctx: _Context, line: int) -> None:
    for fname in expr.functions:
        if fname in ctx.names:
            raise _refuse(f"subworkflow call {fname}() in an expression (use call:)", line)
        if fname not in FUNCTIONS:
            raise _refuse(f"function {fname}()", line)


def _check_next(target: Any, ctx: _Context, line: int) -> str:
    if not isinstance(target, str):
        raise DefinitionError(f"`next` needs a step name (line {line})")
    if target == "end":
        return target
    if target in ("break", "continue"):
        if not ctx.in_loop:
            raise DefinitionError(f"`next: {target}` outside a for loop (line {line})")
        return target
    if not any(target in scope for scope in ctx.scopes):
        raise DefinitionError(f"`next: {target}` names no step reachable from line {line}")
    return target


_ACTIONS = ("assign", "call", "switch", "return", "raise", "steps", "try", "for", "parallel")


def _step(name: str, body: LineMap, line: int, ctx: _Context) -> Step:
    actions = [k for k in body if k in _ACTIONS]
    unknown = [k for k in body if k not in (*_ACTIONS, "next", "args", "result", "retry", "except")]
    if unknown:
        raise _refuse(unknown[0], body.line_of(unknown[0]))
    if len(actions) > 1:
        raise _refuse(f"{actions[0]} with {actions[1]} in one step", body.line_of(actions[1]))
    nxt = _check_next(body["next"], ctx, body.line_of("next")) if "next" in body else None
    action = actions[0] if actions else None
    extra = {"call": {"args", "result"}, "try": {"retry", "except"}}.get(action or "", set())
    for key in ("args", "result", "retry", "except"):
        if key in body and key not in extra:
            raise _refuse(
                f"{key} without {'call' if key in ('args', 'result') else 'try'}", body.line_of(key)
            )
    if action in ("return", "raise") and nxt is not None:
        raise _refuse(f"next with {action}", body.line_of("next"))
    at = body.line_of(action) if action else line
    if action is None:
        if nxt is None:
            raise DefinitionError(f"step {name!r} does nothing (line {line})")
        return Step(name, line, nxt)
    if action == "assign":
        return AssignStep(name, line, nxt, _assignments(body["assign"], ctx, at))
    if action == "call":
        return _call(name, body, line, nxt, ctx)
    if action == "switch":
        return SwitchStep(name, line, nxt, _switch(body["switch"], ctx, at))
    if action == "return":
        if ctx.in_branch:
            raise _refuse("return inside a parallel branch", at)
        return ReturnStep(name, line, None, _value(body["return"], ctx, at))
    if action == "raise":
        return RaiseStep(name, line, None, _value(body["raise"], ctx, at))
    if action == "steps":
        return StepsStep(name, line, nxt, _block(body["steps"], ctx, at))
    if action == "try":
        return _try(name, body, line, nxt, ctx)
    if action == "for":
        return _for(name, body["for"], line, nxt, ctx, at)
    return _parallel(name, body["parallel"], line, nxt, ctx, at)


def _assignments(raw: Any, ctx: _Context, line: int) -> list[tuple[str, list[Accessor], Value]]:
    if not isinstance(raw, list) or not raw:
        raise DefinitionError(f"`assign` needs a list of one-key maps (line {line})")
    if len(raw) > LIMIT_ASSIGNMENTS:
        raise DefinitionError(
            f"more than {LIMIT_ASSIGNMENTS} assignments in one step (line {line})"
        )
    result = []
    for item in raw:
        at = line_of(item, line)
        if not isinstance(item, dict) or len(item) != 1:
            raise DefinitionError(f"each assignment is a one-key map (line {at})")
        ((target, value),) = item.items()
        found: list[Expr] = []
        try:
            variable, accessors = compile_target(str(target), found)
        except ExpressionSyntaxError as e:
            raise DefinitionError(f"{e} (line {at})") from e
        for expr in found:
            _check_expression(expr, ctx, at)
        result.append((variable, accessors, _value(value, ctx, at)))
    return result


def _call(name: str, body: LineMap, line: int, nxt: str | None, ctx: _Context) -> CallStep:
    function = body["call"]
    at = body.line_of("call")
    args = body.get("args") or LineMap()
    if not isinstance(args, dict):
        raise DefinitionError(f"`args` must be a map (line {body.line_of('args')})")
    result = body.get("result")
    if result is not None and not isinstance(result, str):
        raise DefinitionError(f"`result` must be a variable name (line {body.line_of('result')})")
    if not isinstance(function, str):
        raise _refuse("call of a non-name", at)
    if function in ctx.names:
        kind = "subworkflow"
    elif function in EFFECTS:
        kind = "effect"
        allowed, required = EFFECTS[function]
        _check_args(function, args, allowed, required, at)
    elif function in FUNCTIONS:
        kind = "function"
        spec = FUNCTIONS[function]
        _check_args(function, args, spec.params, spec.params[: spec.required], at)
    else:
        raise _refuse(f"call: {function}", at)
    compiled = {str(k): _value(v, ctx, line_of(args, at)) for k, v in args.items()}
    return CallStep(name, line, nxt, function, kind, compiled, result)


def _check_args(
    function: str,
    args: dict[str, Any],
    allowed: tuple[str, ...],
    required: tuple[str, ...],
    at: int,
) -> None:
    for key in args:
        if key not in allowed:
            raise _refuse(f"{function} argument {key}", at)
    for key in required:
        if key not in args:
            raise DefinitionError(f"{function} needs argument `{key}` (line {at})")


def _switch(raw: Any, ctx: _Context, line: int) -> list[Condition]:
    if not isinstance(raw, list) or not raw:
        raise DefinitionError(f"`switch` needs a list of conditions (line {line})")
    if len(raw) > LIMIT_CONDITIONS:
        raise DefinitionError(f"more than {LIMIT_CONDITIONS} conditions in a switch (line {line})")
    conditions = []
    for item in raw:
        at = line_of(item, line)
        if not isinstance(item, LineMap) or "condition" not in item:
            raise DefinitionError(f"each switch entry needs a `condition` (line {at})")
        inline = {k: v for k, v in item.items() if k not in ("condition", "next", "steps")}
        _check_keys(
            item,
            {"condition", "next", "steps", "assign", "return", "raise", "call", "args", "result"},
            "switch",
        )
        nxt = _check_next(item["next"], ctx, item.line_of("next")) if "next" in item else None
        body = None
        if "steps" in item:
            body = _block(item["steps"], ctx, item.line_of("steps"))
        elif inline:
            # a condition may carry one step's action inline (assign/return/raise/call)
            step_body = LineMap(inline)
            step_body.line, step_body.key_lines = item.line, item.key_lines
            ctx.scopes.append(set())
            try:
                body = Block([_step("condition", step_body, at, ctx)])
            finally:
                ctx.scopes.pop()
        conditions.append(Condition(at, _value(item["condition"], ctx, at), nxt, body))
    return conditions


def _try(name: str, body: LineMap, line: int, nxt: str | None, ctx: _Context) -> TryStep:
    raw = body["try"]
    at = body.line_of("try")
    if not isinstance(raw, LineMap):
        raise DefinitionError(f"`try` needs a map (line {at})")
    if set(raw) == {"steps"}:
        block = _block(raw["steps"], ctx, raw.line_of("steps"))
    else:
        ctx.scopes.append(set())
        try:
            block = Block([_step(name, raw, at, ctx)])
        finally:
            ctx.scopes.pop()
    retry = None
    if "retry" in body:
        retry = _retry(body["retry"], ctx, body.line_of("retry"))
    except_as, except_body = None, None
    if "except" in body:
        handler = body["except"]
        hat = body.line_of("except")
        if not isinstance(handler, LineMap):
            raise DefinitionError(f"`except` needs a map with `as` and `steps` (line {hat})")
        _check_keys(handler, {"as", "steps"}, "except")
        except_as = handler.get("as")
        if "steps" not in handler:
            raise DefinitionError(f"`except` needs `steps` (line {hat})")
        except_body = _block(handler["steps"], ctx, handler.line_of("steps"))
    return TryStep(name, line, nxt, block, retry, except_as, except_body)


def _retry(raw: Any, ctx: _Context, line: int) -> Value:
    if is_expression(raw):
        return _value(raw, ctx, line)
    if not isinstance(raw, LineMap):
        raise DefinitionError(f"`retry` needs a policy expression or a map (line {line})")
    _check_keys(raw, {"predicate", "max_retries", "backoff"}, "retry")
    if "predicate" not in raw or "max_retries" not in raw:
        raise DefinitionError(f"`retry` needs `predicate` and `max_retries` (line {line})")
    backoff = raw.get("backoff")
    if isinstance(backoff, LineMap):
        _check_keys(backoff, {"initial_delay", "max_delay", "multiplier"}, "backoff")
    predicate = raw["predicate"]
    if is_expression(predicate) and predicate[2:-1].strip() in ctx.names:
        # a custom predicate is a subworkflow named by expression (reference §6.5)
        ref = PredicateRef(predicate[2:-1].strip(), builtin=False)
        rest = _value({k: v for k, v in raw.items() if k != "predicate"}, ctx, line)
        return lambda s: {**rest(s), "predicate": ref}
    return _value(dict(raw), ctx, line)


def _for(name: str, raw: Any, line: int, nxt: str | None, ctx: _Context, at: int) -> ForStep:
    if not isinstance(raw, LineMap):
        raise DefinitionError(f"`for` needs a map (line {at})")
    _check_keys(raw, {"value", "index", "in", "range", "steps"}, "for")
    if ("in" in raw) == ("range" in raw):
        raise DefinitionError(f"`for` needs exactly one of `in` and `range` (line {at})")
    if "value" not in raw and "index" not in raw:
        raise DefinitionError(f"`for` needs `value` (line {at})")
    items = _value(raw["in"], ctx, raw.line_of("in")) if "in" in raw else None
    rng = _value(raw["range"], ctx, raw.line_of("range")) if "range" in raw else None
    outer = (ctx.scopes, ctx.in_loop)
    # jumps cannot leave a loop body except by break/continue
    ctx.scopes, ctx.in_loop = [], True
    try:
        body = _block(raw.get("steps"), ctx, raw.line_of("steps"))
    finally:
        ctx.scopes, ctx.in_loop = outer
    return ForStep(name, line, nxt, str(raw.get("value", "")), raw.get("index"), items, rng, body)


def _parallel(
    name: str, raw: Any, line: int, nxt: str | None, ctx: _Context, at: int
) -> ParallelStep:
    if not isinstance(raw, LineMap):
        raise DefinitionError(f"`parallel` needs a map (line {at})")
    _check_keys(
        raw, {"shared", "concurrency_limit", "exception_policy", "branches", "for"}, "parallel"
    )
    if ("branches" in raw) == ("for" in raw):
        raise DefinitionError(f"`parallel` needs exactly one of `branches` and `for` (line {at})")
    policy = raw.get("exception_policy")
    if policy not in (None, "continueAll"):
        raise _refuse(f"exception_policy: {policy}", raw.line_of("exception_policy"))
    shared = raw.get("shared") or []
    if not isinstance(shared, list) or not all(isinstance(s, str) for s in shared):
        raise DefinitionError(
            f"`shared` is a list of variable names (line {raw.line_of('shared')})"
        )
    limit = (
        _value(raw["concurrency_limit"], ctx, raw.line_of("concurrency_limit"))
        if "concurrency_limit" in raw
        else None
    )
    outer = (ctx.scopes, ctx.in_loop, ctx.in_branch)
    ctx.scopes, ctx.in_loop, ctx.in_branch = [], False, True
    try:
        if "for" in raw:
            loop = _for(name, raw["for"], line, None, ctx, raw.line_of("for"))
            return ParallelStep(name, line, nxt, shared, limit, policy is not None, None, loop)
        branches = raw["branches"]
        bat = raw.line_of("branches")
        if not isinstance(branches, list) or not branches:
            raise DefinitionError(f"`branches` needs a list (line {bat})")
        if len(branches) > LIMIT_BRANCHES:
            raise DefinitionError(f"more than {LIMIT_BRANCHES} branches (line {bat})")
        compiled = []
        for branch in branches:
            if not isinstance(branch, LineMap) or len(branch) != 1:
                raise DefinitionError(
                    f"a branch is a map of one name (line {line_of(branch, bat)})"
                )
            ((bname, bbody),) = branch.items()
            if not isinstance(bbody, LineMap) or set(bbody) != {"steps"}:
                raise DefinitionError(f"branch {bname!r} needs only `steps` (line {branch.line})")
            compiled.append((bname, _block(bbody["steps"], ctx, bbody.line_of("steps"))))
        return ParallelStep(name, line, nxt, shared, limit, policy is not None, compiled, None)
    finally:
        ctx.scopes, ctx.in_loop, ctx.in_branch = outer
