"""Every construct the engine supports, run end to end on a fake store, transport and clock.
Expected results follow reference §6 (section cited per test)."""

from __future__ import annotations

import textwrap
import time

import pytest

from meridian.domain.errors import Conflict, NotFound
from meridian.embedded.workflows import FakeClock, TransportError

from .test_workflows_helpers import FakeTransport, error_of, make_engine, ok, run, status

# §6.1 — the reference's structure example, with the HTTP call answered by a fake.
STRUCTURE_EXAMPLE = """\
main:
  params: [args]
  steps:
    - init:
        assign:
          - parcel: ${args.parcel}
          - tries: 0
    - route:
        switch:
          - condition: ${parcel.weight > 30}
            next: heavy
          - condition: true
            steps:
              - s: {assign: [{lane: "std"}]}
        next: notify
    - heavy: {assign: [{lane: "freight"}]}
    - notify:
        call: http.post
        args: {url: '${sys.get_env("NOTIFY_URL")}', body: {lane: '${lane}'}, auth: {type: OIDC}}
        result: resp
    - done:
        return: ${resp.body}
helper:
  params: [a, b: 10]
  steps:
    - r: {return: '${a + b}'}
"""


def test_reference_structure_example_switch_next_and_http() -> None:
    transport = FakeTransport(handler=lambda m, u, h, body: ok({"echo": body, "url": u}))
    light = run(
        STRUCTURE_EXAMPLE,
        {"parcel": {"weight": 3}},
        transport=transport,
        env={"NOTIFY_URL": "http://127.0.0.1:9/notify"},
    )
    heavy = run(
        STRUCTURE_EXAMPLE,
        {"parcel": {"weight": 31}},
        transport=transport,
        env={"NOTIFY_URL": "http://127.0.0.1:9/notify"},
    )
    assert light.result == {"echo": {"lane": "std"}, "url": "http://127.0.0.1:9/notify"}
    assert heavy.result["echo"] == {"lane": "freight"}
    assert transport.requests[0]["method"] == "POST"
    assert transport.requests[0]["headers"]["Content-Type"] == "application/json"


def test_subworkflow_with_default_param() -> None:
    # §6.1: helper(a, b: 10) returns a + b
    full = STRUCTURE_EXAMPLE.replace(
        "    - init:",
        "    - h:\n        call: helper\n        args: {a: 5}\n        result: h\n"
        "    - early: {return: '${h}'}\n    - init:",
    )
    assert run(full, {"parcel": {"weight": 1}}).result == 15


def test_assign_into_maps_and_lists() -> None:
    result = run("""
        main:
          steps:
            - a:
                assign:
                  - m: {}
                  - m.k: 1
                  - m["other"]: 2
                  - l: [1, 2, 3]
                  - l[1]: 20
                  - m.deep.er: true
            - r: {return: {m: '${m}', l: '${l}'}}
        """).result
    assert result == {"m": {"k": 1, "other": 2, "deep": {"er": True}}, "l": [1, 20, 3]}


def test_for_in_index_break_continue_and_scoping() -> None:
    # §6.2: variables first created inside the loop don't exist after it
    execution = run("""
        main:
          steps:
            - init: {assign: [{total: 0}, {seen: []}]}
            - loop:
                for:
                  value: v
                  index: i
                  in: [1, 2, 3, 4, 5]
                  steps:
                    - skip:
                        switch:
                          - condition: ${v == 2}
                            next: continue
                          - condition: ${v == 5}
                            next: break
                    - inner: {assign: [{tmp: '${v * 10}'}, {total: '${total + tmp}'},
                                       {seen: '${list.concat(seen, i)}'}]}
            - after: {return: {total: '${total}', seen: '${seen}', tmp_exists: '${"tmp" in ["x"]}'}}
        """)
    assert execution.result == {"total": 80, "seen": [0, 2, 3], "tmp_exists": False}
    leaked = run("""
        main:
          steps:
            - loop:
                for: {value: v, range: [1, 3], steps: [{s: {assign: [{tmp: '${v}'}]}}]}
            - after: {return: '${tmp}'}
        """)
    assert "KeyError" in error_of(leaked)["tags"]


def test_for_range_is_inclusive() -> None:
    # §6.2: range [1, 9] is inclusive on both ends
    assert (
        run("""
        main:
          steps:
            - init: {assign: [{sum: 0}]}
            - loop:
                for: {value: v, range: [1, 9], steps: [{s: {assign: [{sum: '${sum + v}'}]}}]}
            - r: {return: '${sum}'}
        """).result
        == 45
    )


def test_next_end_stops_with_null_and_nested_steps() -> None:
    assert (
        run("""
        main:
          steps:
            - a:
                steps:
                  - inner: {assign: [{x: 1}]}
                next: end
            - never: {return: 2}
        """).result
        is None
    )


def test_raise_string_and_map_and_except_as() -> None:
    # §6.4: raise accepts a string or a map; the raised value is what `e` receives
    assert run("""
        main:
          steps:
            - t:
                try:
                  raise: {code: 55, message: "custom"}
                except:
                  as: e
                  steps:
                    - r: {return: '${e}'}
        """).result == {"code": 55, "message": "custom"}
    failed = run("""
        main:
          steps:
            - boom: {raise: "plain string"}
        """)
    assert error_of(failed) == "plain string"
    assert failed.error["stack_trace"]["elements"][0]["step"] == "boom"


def test_http_error_map_and_tag_test() -> None:
    # §6.4: HttpError carries code, headers, body; test tags with "HttpError" in e.tags
    transport = FakeTransport(answers=[status(404)])
    result = run(
        """
        main:
          steps:
            - t:
                try:
                  call: http.get
                  args: {url: "http://127.0.0.1:9/x", query: {a: 1, b: "two"}}
                except:
                  as: e
                  steps:
                    - r: {return: {http: '${"HttpError" in e.tags}', code: '${e.code}', body: '${e.body}'}}
        """,
        transport=transport,
    ).result
    assert result == {"http": True, "code": 404, "body": "nope"}
    assert transport.requests[0]["url"] == "http://127.0.0.1:9/x?a=1&b=two"


@pytest.mark.parametrize("tag", ["ConnectionError", "ConnectionFailedError", "TimeoutError"])
def test_transport_failures_raise_the_reference_tags(tag: str) -> None:
    failed = run(
        """
        main:
          steps:
            - c: {call: http.get, args: {url: "http://127.0.0.1:9/"}}
        """,
        transport=FakeTransport(answers=[TransportError(tag, "down")]),
    )
    assert error_of(failed)["tags"] == [tag]


def test_http_timeout_above_limit_is_value_error() -> None:
    failed = run("""
        main:
          steps:
            - c: {call: http.get, args: {url: "http://127.0.0.1:9/", timeout: 1801}}
        """)
    assert error_of(failed)["tags"] == ["ValueError"]


RETRY = """
main:
  steps:
    - t:
        try:
          call: http.get
          args: {url: "http://127.0.0.1:9/"}
          result: r
        retry: %s
        except:
          as: e
          steps:
            - failed: {return: {failed: '${e.code}'}}
    - ok: {return: '${r.body}'}
"""


def test_custom_backoff_delays_match_reference() -> None:
    # §6.5: initial 1, max 60, multiplier 2, max_retries 8 → 1,2,4,8,16,32,60,60; 9 executions
    clock = FakeClock()
    transport = FakeTransport(answers=[status(503)] * 20)
    policy = (
        "{predicate: '${http.default_retry_predicate}', max_retries: 8, "
        "backoff: {initial_delay: 1, max_delay: 60, multiplier: 2}}"
    )
    execution = run(RETRY % policy, transport=transport, clock=clock)
    assert execution.result == {"failed": 503}
    assert clock.sleeps == [1, 2, 4, 8, 16, 32, 60, 60]
    assert len(transport.requests) == 9


def test_default_retry_policy_retries_503_five_times_with_default_backoff() -> None:
    # §6.6: max_retries 5, backoff initial 1, max 60, multiplier 1.25
    clock = FakeClock()
    transport = FakeTransport(answers=[status(503)] * 3 + [status(200)])
    execution = run(RETRY % "${http.default_retry}", transport=transport, clock=clock)
    assert execution.state == "SUCCEEDED"
    assert clock.sleeps == [1.0, 1.25, 1.5625]
    clock = FakeClock()
    exhausted = run(
        RETRY % "${http.default_retry}",
        clock=clock,
        transport=FakeTransport(answers=[status(429)] * 10),
    )
    assert exhausted.result == {"failed": 429}
    assert clock.sleeps == [1.0, 1.25, 1.5625, 1.953125, 2.44140625]


@pytest.mark.parametrize(
    ("policy", "code", "retried"),
    [
        ("${http.default_retry}", 500, False),  # §6.6: 500 is not retried by the defaults
        ("${http.default_retry}", 502, True),
        ("${http.default_retry}", 504, True),
        ("${http.default_retry_non_idempotent}", 502, False),
        ("${http.default_retry_non_idempotent}", 503, True),
        ("${http.default_retry_non_idempotent}", 429, True),
    ],
)
def test_default_retry_predicates(policy: str, code: int, retried: bool) -> None:
    transport = FakeTransport(answers=[status(code), status(200)])
    execution = run(RETRY % policy, transport=transport)
    assert (execution.state == "SUCCEEDED" and "failed" not in (execution.result or {})) is retried


def test_non_idempotent_policy_retries_connection_failed_but_not_broken_connection() -> None:
    failed = FakeTransport(answers=[TransportError("ConnectionFailedError", "x"), ok(1)])
    broken = FakeTransport(answers=[TransportError("ConnectionError", "x"), ok(1)])
    assert run(RETRY % "${http.default_retry_non_idempotent}", transport=failed).result == 1
    run(RETRY % "${http.default_retry_non_idempotent}", transport=broken)
    assert len(failed.requests) == 2 and len(broken.requests) == 1


def test_custom_predicate_subworkflow() -> None:
    # §6.5: a custom predicate is a one-param subworkflow returning bool
    clock = FakeClock()
    source = """
        main:
          steps:
            - init: {assign: [{n: 0}]}
            - t:
                try:
                  steps:
                    - count: {assign: [{n: '${n + 1}'}]}
                    - fail: {raise: {code: '${n}', retry_me: true}}
                retry:
                  predicate: ${only_three}
                  max_retries: 10
                  backoff: {initial_delay: 2, max_delay: 5, multiplier: 3}
                except:
                  as: e
                  steps:
                    - r: {return: {attempts: '${n}', last: '${e.code}'}}
        only_three:
          params: [e]
          steps:
            - check:
                switch:
                  - condition: ${e.code < 3}
                    return: true
            - no: {return: false}
        """
    assert run(source, clock=clock).result == {"attempts": 3, "last": 3}
    assert clock.sleeps == [2, 5]


def test_sys_sleep_log_now_and_get_env() -> None:
    clock = FakeClock(start=1000.0)
    execution = run(
        """
        main:
          steps:
            - t0: {assign: [{t0: '${sys.now()}'}]}
            - log: {call: sys.log, args: {text: "hello", severity: INFO}}
            - nap: {call: sys.sleep, args: {seconds: 30}}
            - now: {call: sys.now, result: t1}
            - env: {call: sys.get_env, args: {name: GOOGLE_CLOUD_WORKFLOW_ID}, result: wf}
            - r: {return: {slept: '${t1 - t0}', wf: '${wf}', when: '${time.format(t1)}'}}
        """,
        clock=clock,
    )
    assert execution.result == {"slept": 30.0, "wf": "wf", "when": "1970-01-01T00:17:10.000000Z"}
    assert clock.sleeps == [30]


def test_parallel_branches_with_shared_variables() -> None:
    # §6.3: only shared variables are writable from branches; others are branch-local copies
    result = run("""
        main:
          steps:
            - init: {assign: [{results: {}}, {local: "outer"}]}
            - fan:
                parallel:
                  shared: [results]
                  branches:
                    - a:
                        steps:
                          - put: {assign: [{results.a: 1}, {local: "changed-in-a"}]}
                    - b:
                        steps:
                          - put: {assign: [{results.b: '${local}'}]}
            - r: {return: {results: '${results}', local: '${local}'}}
        """).result
    assert result == {"results": {"a": 1, "b": "outer"}, "local": "outer"}


def test_parallel_for_with_concurrency_limit() -> None:
    clock = FakeClock()
    result = run(
        """
        main:
          steps:
            - init: {assign: [{total: 0}, {done: []}]}
            - fan:
                parallel:
                  shared: [total, done]
                  concurrency_limit: 2
                  for:
                    value: v
                    in: [1, 2, 3, 4]
                    steps:
                      - nap: {call: sys.sleep, args: {seconds: '${v}'}}
                      - add: {assign: [{total: '${total + v}'}, {done: '${list.concat(done, v)}'}]}
            - r: {return: {total: '${total}', n: '${len(done)}'}}
        """,
        clock=clock,
    ).result
    assert result == {"total": 10, "n": 4}


def test_parallel_unhandled_error_default_and_continue_all() -> None:
    source = """
        main:
          steps:
            - init: {assign: [{ok: 0}]}
            - fan:
                parallel:
                  shared: [ok]
                  %s
                  for:
                    value: v
                    in: [1, 2, 3]
                    steps:
                      - check:
                          switch:
                            - condition: ${v == 2}
                              raise: {message: '${"bad " + v}'}
                      - good: {assign: [{ok: '${ok + 1}'}]}
        """
    default = run(source % "")
    assert error_of(default) == {"message": "bad 2"}
    collected = run(source % "exception_policy: continueAll")
    error = error_of(collected)
    assert error["tags"] == ["UnhandledBranchError"]
    assert [b["error"] for b in error["branches"]] == [{"message": "bad 2"}]


def test_unshared_write_in_parallel_is_discarded_and_shared_must_exist() -> None:
    failed = run("""
        main:
          steps:
            - fan:
                parallel:
                  shared: [nothere]
                  branches:
                    - a: {steps: [{s: {assign: [{x: 1}]}}]}
        """)
    assert error_of(failed)["tags"] == ["KeyError"]


def test_recursion_limit() -> None:
    failed = run("""
        main:
          steps:
            - go: {call: down, args: {n: 0}, result: r}
        down:
          params: [n]
          steps:
            - again: {call: down, args: {n: '${n + 1}'}, result: r}
        """)
    assert error_of(failed)["tags"] == ["RecursionError"]


def test_pure_function_call_step_with_named_args() -> None:
    assert run("""
        main:
          steps:
            - split: {call: text.split, args: {source: "a/b", separator: "/"}, result: parts}
            - r: {return: '${parts}'}
        """).result == ["a", "b"]


# callbacks -------------------------------------------------------------------------------------

CALLBACK = """
main:
  steps:
    - create:
        call: events.create_callback_endpoint
        args: {http_callback_method: POST}
        result: cb
    - publish:
        call: http.post
        args: {url: "http://127.0.0.1:9/offer", body: {callback: '${cb.url}'}}
    - wait:
        try:
          call: events.await_callback
          args: {callback: '${cb}', timeout: 600}
          result: answer
        except:
          as: e
          steps:
            - timed_out: {return: {timeout: '${"TimeoutError" in e.tags}'}}
    - done: {return: '${answer.http_request.body}'}
"""


def _wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_callback_sent_after_the_wait_starts() -> None:
    clock = FakeClock(auto=False)
    transport = FakeTransport()
    engine = make_engine(transport=transport, clock=clock)
    engine.register("wf", CALLBACK)
    with engine:
        execution = engine.start("wf", {})
        _wait_until(lambda: clock.waiting > 0)  # the await_callback has started
        url = transport.requests[0]["body"]["callback"]
        assert url == f"http://127.0.0.1:8790/v1/callbacks/{execution.execution_id}/cb1"
        engine.send_callback(url, {"accepted": True})
        done = engine.wait(execution.execution_id)
    assert done.result == {"accepted": True}


def test_callback_sent_before_the_wait_starts_is_kept() -> None:
    clock = FakeClock(auto=False)
    engine = make_engine(clock=clock)
    engine.register(
        "wf",
        textwrap.dedent("""
        main:
          steps:
            - create: {call: events.create_callback_endpoint, result: cb}
            - nap: {call: sys.sleep, args: {seconds: 5}}
            - wait: {call: events.await_callback, args: {callback: '${cb}'}, result: answer}
            - done: {return: '${answer}'}
        """),
    )
    with engine:
        execution = engine.start("wf", {})
        _wait_until(lambda: clock.waiting > 0)  # sleeping, not yet awaiting
        url = f"http://127.0.0.1:8790/v1/callbacks/{execution.execution_id}/cb1"
        engine.send_callback(url, {"early": 1})
        with pytest.raises(Conflict):  # §6.9: 429 while one is queued and not consumed
            engine.send_callback(url, {"early": 2})
        clock.advance(5)
        done = engine.wait(execution.execution_id)
        with pytest.raises(NotFound):  # §6.9: 404 once the execution is finished
            engine.send_callback(url, {"late": 1})
    request = done.result["http_request"]
    assert request["body"] == {"early": 1} and request["method"] == "POST"
    assert done.result["type"] == "HTTP" and "received_time" in done.result


def test_await_callback_timeout_raises_timeout_error() -> None:
    clock = FakeClock()  # auto: the 600 s timeout elapses at once
    execution = run(CALLBACK, clock=clock)
    assert execution.result == {"timeout": True}
    assert 600 in clock.sleeps


# executions API --------------------------------------------------------------------------------


def test_start_with_existing_id_is_idempotent_and_list_and_cancel() -> None:
    clock = FakeClock(auto=False)
    engine = make_engine(clock=clock)
    engine.register(
        "wf",
        textwrap.dedent("""
        main:
          params: [args]
          steps:
            - nap: {call: sys.sleep, args: {seconds: 100}}
            - r: {return: '${args}'}
        """),
    )
    with engine:
        first = engine.start("wf", {"n": 1}, execution_id="window-1")
        again = engine.start("wf", {"n": 2}, execution_id="window-1")
        assert again.execution_id == "window-1" and again.argument == {"n": 1}
        other = engine.start("wf", {"n": 3})
        assert {e.execution_id for e in engine.list("wf")} == {"window-1", other.execution_id}
        assert [e.execution_id for e in engine.list("wf", state="ACTIVE")].count("window-1") == 1
        cancelled = engine.cancel(first.execution_id)
        assert cancelled.state == "CANCELLED"
        clock.advance(100)
        assert engine.wait(other.execution_id).result == {"n": 3}
        assert engine.get("window-1").state == "CANCELLED"
        with pytest.raises(NotFound):
            engine.get("missing")
        history = engine.steps(other.execution_id)
    assert [(s["step"], s["state"]) for s in history] == [("nap", "SUCCEEDED"), ("r", "SUCCEEDED")]
