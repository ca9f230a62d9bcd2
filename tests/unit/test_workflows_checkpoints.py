"""The engine's checkpoints on the core's group commit: the durability rule (an HTTP call is
issued only once the steps before it are committed) and a commit that fails failing its execution
alone, before anything outside saw the steps it lost."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from meridian.embedded.workflows import records
from meridian.ports import Query
from tests.fakes import FakeDocumentStore

from .test_workflows_helpers import FakeTransport, make_engine, ok

CALLS_OUT = textwrap.dedent("""
    main:
      params: [args]
      steps:
        - init: {assign: [{n: '${args.n}'}]}
        - call:
            call: http.post
            args: {url: "http://provider.test/notify", body: {n: '${n}'}}
            result: resp
        - done: {return: '${resp.body}'}
    """)


class RefusingStore(FakeDocumentStore):
    """Refuses every batch holding a write for an execution in ``refused``."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    def batch_write(self, writes: Sequence[tuple[str, str, Mapping[str, Any] | None]]) -> None:
        if any(path.split("/")[1] in self.refused for _, path, _ in writes):
            raise ValueError("document too large")
        super().batch_write(writes)


def test_an_http_call_is_issued_only_once_the_steps_before_it_are_committed() -> None:
    store = FakeDocumentStore()
    seen: list[list[str]] = []

    def answer(method: str, url: str, headers: dict[str, str], body: Any) -> Any:
        history = store.query(Query(records.steps_collection("e1")))
        seen.append([d.data["step"] for d in history])
        return ok({"sent": body})

    engine = make_engine(store=store, transport=FakeTransport(handler=answer))
    engine.register("wf", CALLS_OUT)
    with engine:
        engine.start("wf", {"n": 7}, execution_id="e1")
        done = engine.wait("e1")
    assert done.state == "SUCCEEDED" and done.result == {"sent": {"n": 7}}
    assert seen == [["init"]]  # the store held the step before it when the request went out


def test_a_commit_that_fails_fails_its_execution_alone_before_its_call_goes_out() -> None:
    store = RefusingStore({"poisoned"})
    transport = FakeTransport(handler=lambda method, url, headers, body: ok({"sent": body}))
    engine = make_engine(store=store, transport=transport)
    engine.register("wf", CALLS_OUT)
    with engine:
        engine.start("wf", {"n": 1}, execution_id="poisoned")
        engine.start("wf", {"n": 2}, execution_id="healthy")
        lost = engine.wait("poisoned")
        done = engine.wait("healthy")
    assert lost.state == "FAILED" and "document too large" in json.dumps(lost.error)
    assert done.state == "SUCCEEDED" and done.result == {"sent": {"n": 2}}
    assert [r["body"] for r in transport.requests] == [{"n": 2}]  # none for the lost steps
