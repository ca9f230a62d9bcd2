"""Durable executions over the embedded SQLite DocumentStore: an engine stopped mid-execution
(waiting for a callback, sleeping, inside parallel branches, backing off between retries) and a
new engine over the same data directory resume and complete."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.workflows import FakeClock, WorkflowEngine
from tests.unit.test_workflows_helpers import FakeTransport, status

SAGA = textwrap.dedent("""
    main:
      params: [args]
      steps:
        - init: {assign: [{accepted: {}}]}
        - offers:
            parallel:
              shared: [accepted]
              for:
                value: driver
                in: ${args.drivers}
                steps:
                  - create: {call: events.create_callback_endpoint, result: cb}
                  - offer:
                      call: http.post
                      args: {url: "http://127.0.0.1:9/offer", body: {driver: '${driver}', url: '${cb.url}'}}
                  - wait:
                      call: events.await_callback
                      args: {callback: '${cb}', timeout: 3600}
                      result: answer
                  - record: {assign: [{'accepted[driver]': '${answer.http_request.body.ok}'}]}
        - nap: {call: sys.sleep, args: {seconds: 60}}
        - done: {return: '${accepted}'}
""")


def _engine(data_dir: Path, clock: FakeClock, transport: FakeTransport) -> WorkflowEngine:
    engine = WorkflowEngine(EmbeddedDocumentStore(data_dir), transport=transport, clock=clock)
    engine.register("saga", SAGA)
    return engine.open()


def _until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_restart_while_waiting_for_callbacks_and_sleeping(tmp_path: Path) -> None:
    clock, transport = FakeClock(auto=False), FakeTransport()
    first = _engine(tmp_path, clock, transport)
    execution = first.start("saga", {"drivers": ["d1", "d2"]}, execution_id="window-7")
    _until(lambda: len(transport.requests) == 2 and clock.waiting >= 2)
    urls = {r["body"]["driver"]: r["body"]["url"] for r in transport.requests}
    first.send_callback(urls["d1"], {"ok": True})  # d1 answers before the crash
    _until(lambda: any(s["step"] == "record" for s in first.steps("window-7")))
    first.close()  # the "process" dies with d2 still waiting

    # a callback sent while no engine runs is kept in the store
    second_clock = FakeClock(start=clock.now(), auto=False)
    second = WorkflowEngine(
        EmbeddedDocumentStore(tmp_path), transport=transport, clock=second_clock
    )
    second.register("saga", SAGA)
    second.open()
    try:
        _until(lambda: second_clock.waiting >= 1)  # resumed, awaiting d2's callback again
        assert len(transport.requests) == 2  # finished steps are not re-run
        second.send_callback(urls["d2"], {"ok": False})
        # the parallel step finishes and the execution is sleeping in `nap`
        _until(
            lambda: (
                any(s["step"] == "offers" for s in second.steps("window-7"))
                and second_clock.waiting >= 1
            )
        )
        second.close()  # and dies again, this time during sys.sleep

        third_clock = FakeClock(start=second_clock.now())  # auto: the rest of the sleep passes
        third = _engine(tmp_path, third_clock, transport)
        try:
            done = third.wait(execution.execution_id)
        finally:
            third.close()
    finally:
        second.close()
    assert done.state == "SUCCEEDED"
    assert done.result == {"d1": True, "d2": False}
    assert third_clock.sleeps and third_clock.sleeps[0] <= 60  # the remaining sleep, not a new one
    history = [s["step"] for s in third.steps("window-7")]
    assert history.count("offer") == 2 and history[-1] == "done"


def test_restart_during_retry_backoff_keeps_the_attempt_count(tmp_path: Path) -> None:
    source = textwrap.dedent("""
        main:
          steps:
            - t:
                try:
                  call: http.get
                  args: {url: "http://127.0.0.1:9/"}
                  result: r
                retry: ${http.default_retry}
            - ok: {return: '${r.code}'}
    """)
    clock = FakeClock(auto=False)
    transport = FakeTransport(answers=[status(503), status(503)])
    engine = WorkflowEngine(EmbeddedDocumentStore(tmp_path), transport=transport, clock=clock)
    engine.register("retry", source)
    engine.open()
    execution = engine.start("retry", {})
    clock.advance(0)
    _until(lambda: clock.waiting == 1 and len(transport.requests) == 1)
    clock.advance(1)  # first backoff (1 s) passes; second attempt fails, second backoff 1.25 s
    _until(lambda: len(transport.requests) == 2 and clock.waiting == 1)
    engine.close()

    resumed_clock = FakeClock(start=clock.now())
    resumed = WorkflowEngine(
        EmbeddedDocumentStore(tmp_path), transport=transport, clock=resumed_clock
    )
    resumed.register("retry", source)
    with resumed:
        done = resumed.wait(execution.execution_id)
    assert done.result == 200
    assert resumed_clock.sleeps == [1.25]  # the pending backoff, then the third attempt
