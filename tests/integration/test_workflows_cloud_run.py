"""The Cloud Run Admin API connector of the embedded Workflows engine
(``googleapis.run.v2.projects.locations.jobs.run``) running real child processes over the embedded
store: the Execution it returns, the OperationError of a failed task, a missing job's HttpError,
task timeouts, and durability (a finished job is not run again by a resumed execution; one
interrupted with the engine runs again as its next attempt)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.workflows import WorkflowEngine
from meridian.embedded.workflows.cloud_run import ProcessJobRunner

# The stand-in for `meridian job run JOB ARGS...`: appends what it was run with to a file, then
# sleeps ARGS[1] seconds and exits with ARGS[2].
JOB = textwrap.dedent("""
    import json, os, sys, time
    job, args = sys.argv[1], sys.argv[2:]
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(json.dumps({"job": job, "args": args, "execution": os.environ["CLOUD_RUN_EXECUTION"],
                            "attempt": os.environ["CLOUD_RUN_TASK_ATTEMPT"],
                            "job_env": os.environ["CLOUD_RUN_JOB"]}) + "\\n")
    print("working on", args[0], flush=True)
    time.sleep(float(args[1]))
    if args[2] != "0":
        print("page 3 failed: checksum differs", file=sys.stderr, flush=True)
    sys.exit(int(args[2]))
""")

FLOW = textwrap.dedent("""
    main:
      params: [args]
      steps:
        - run:
            try:
              call: googleapis.run.v2.projects.locations.jobs.run
              args:
                name: ${"projects/p1/locations/europe-west1/jobs/" + args.job}
                body:
                  overrides:
                    containerOverrides:
                      - args: ${args.argv}
                    timeout: ${default(map.get(args, "timeout"), "60s")}
              result: execution
            except:
              as: e
              steps:
                - failed: {return: {error: '${e}'}}
        - hold:
            switch:
              - condition: ${default(map.get(args, "hold"), false)}
                steps:
                  - cb: {call: events.create_callback_endpoint, result: cb}
                  - wait: {call: events.await_callback, args: {callback: '${cb}', timeout: 60}}
        - done: {return: {execution: '${execution}'}}
""")


def _engine(data_dir: Path, runs: Path, known: set[str] | None = None) -> WorkflowEngine:
    script = data_dir / "job.py"
    script.write_text(JOB)
    runner = ProcessJobRunner(
        [sys.executable, str(script)],
        known=known,
        env={"RUNS_FILE": str(runs)},
        log_dir=data_dir / "logs",
    )
    engine = WorkflowEngine(EmbeddedDocumentStore(data_dir / "store"), jobs=runner)
    engine.register("flow", FLOW)
    return engine.open()


def _runs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_job_runs_as_a_process_and_answers_its_execution(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    with _engine(tmp_path, runs) as engine:
        started = engine.start("flow", {"job": "sync-shipments", "argv": ["ev1", "0", "0"]})
        done = engine.wait(started.execution_id, timeout=30)
    assert done.state == "SUCCEEDED", done.error
    execution = done.result["execution"]  # type: ignore[index]
    (run,) = _runs(runs)
    assert run["job"] == run["job_env"] == "sync-shipments"
    assert run["args"] == ["ev1", "0", "0"]  # the override's args, after the job's command
    assert run["attempt"] == "0"
    assert execution["name"] == (
        f"projects/p1/locations/europe-west1/jobs/sync-shipments/executions/{run['execution']}"
    )
    assert run["execution"].startswith("sync-shipments-")
    assert execution["succeededCount"] == 1 and execution["failedCount"] == 0
    assert execution["taskCount"] == 1
    completed = next(c for c in execution["conditions"] if c["type"] == "Completed")
    assert completed["state"] == "CONDITION_SUCCEEDED"
    assert execution["completionTime"] >= execution["startTime"]
    log = Path(execution["logUri"].removeprefix("file://"))
    assert "working on ev1" in log.read_text()


def test_a_non_zero_exit_raises_the_operation_error(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    with _engine(tmp_path, runs) as engine:
        started = engine.start("flow", {"job": "reconcile", "argv": ["ev2", "0", "3"]})
        done = engine.wait(started.execution_id, timeout=30)
    assert done.state == "SUCCEEDED", done.error
    error = done.result["error"]  # type: ignore[index]
    assert error["tags"] == ["OperationError"]
    assert "non-zero status of 3" in error["message"]
    assert "page 3 failed: checksum differs" in error["message"]  # its last line of output
    operation = error["operation"]
    assert operation["done"] is True
    assert operation["error"]["message"] == error["message"]
    assert operation["metadata"]["@type"] == "type.googleapis.com/google.cloud.run.v2.Execution"
    assert operation["metadata"]["failedCount"] == 1
    assert operation["metadata"]["job"] == "reconcile"


def test_an_unknown_job_is_the_connectors_404(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    with _engine(tmp_path, runs, known={"sync-shipments"}) as engine:
        started = engine.start("flow", {"job": "sync-nothing", "argv": ["x", "0", "0"]})
        done = engine.wait(started.execution_id, timeout=30)
    error = done.result["error"]  # type: ignore[index]
    assert error["tags"] == ["HttpError"] and error["code"] == 404
    assert "'sync-nothing' of kind 'JOB'" in error["message"]
    assert _runs(runs) == []


def test_a_task_past_its_timeout_is_killed_and_fails(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    with _engine(tmp_path, runs) as engine:
        started = engine.start(
            "flow", {"job": "sync-shipments", "argv": ["ev3", "30", "0"], "timeout": "1s"}
        )
        t0 = time.monotonic()
        done = engine.wait(started.execution_id, timeout=30)
    assert time.monotonic() - t0 < 10
    error = done.result["error"]  # type: ignore[index]
    assert error["tags"] == ["OperationError"]
    assert "timeout of 1 s" in error["message"]


def test_a_resumed_execution_does_not_run_a_finished_job_again(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    first = _engine(tmp_path, runs)
    started = first.start(
        "flow", {"job": "sync-identities", "argv": ["ev4", "0", "0"], "hold": True}
    )
    _until(lambda: any(s["step"] == "cb" for s in first.steps(started.execution_id)))
    first.close()  # the platform stops after the job, before the execution ends

    second = _engine(tmp_path, runs)
    try:
        _until(lambda: any(s["step"] == "cb" for s in second.steps(started.execution_id)))
        url = f"{second.base_url}/v1/callbacks/{started.execution_id}/cb1"
        second.send_callback(url, {"go": True})
        done = second.wait(started.execution_id, timeout=30)
    finally:
        second.close()
    assert done.state == "SUCCEEDED", done.error
    (run,) = _runs(runs)  # one run only
    assert done.result["execution"]["name"].endswith(f"/executions/{run['execution']}")  # type: ignore[index]


def test_a_job_interrupted_with_the_engine_runs_again_as_the_next_attempt(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs.jsonl"
    first = _engine(tmp_path, runs)
    started = first.start("flow", {"job": "sync-shipments", "argv": ["ev5", "2", "0"]})
    _until(lambda: len(_runs(runs)) == 1)
    first.close()  # the job's process ends with the engine, mid-run

    second = _engine(tmp_path, runs)
    try:
        done = second.wait(started.execution_id, timeout=30)
    finally:
        second.close()
    assert done.state == "SUCCEEDED", done.error
    interrupted, rerun = _runs(runs)
    assert interrupted["execution"] == rerun["execution"]  # the same execution ...
    assert (interrupted["attempt"], rerun["attempt"]) == ("0", "1")  # ... its next attempt
    assert done.result["execution"]["retriedCount"] == 1  # type: ignore[index]
