"""workflows/sync.yaml on the embedded engine, started by the embedded Eventarc Pub/Sub trigger
(``meridian.embedded.eventarc_workflows``) from a SyncRequested published on sync.requests, with
the jobs run by a recording runner in place of processes: the order of the jobs, the argument
each receives, the reports (SyncStarted, SyncEnded; SyncError naming the step and the reason,
the execution failing), sync-ready polled until ready and its timeout; and the report job's
events as published."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meridian.catalog import load_catalog
from meridian.codec.events import EventCodec
from meridian.domain.events import SyncEnded, SyncError, SyncOrigin, SyncRequested, SyncStarted
from meridian.embedded.docstore import EmbeddedDocumentStore
from meridian.embedded.eventarc_workflows import EVENT_TYPE, WorkflowTriggers, execution_id
from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import RetryPolicy
from meridian.embedded.workflows import FakeClock, WorkflowEngine
from meridian.embedded.workflows.cloud_run import TaskOutcome
from meridian.ports import Message
from meridian.resources import workflows_directory
from services.sync.envelope import decode_argument, decode_report
from services.sync.report import publish_report

CATALOG = load_catalog()
CODEC = EventCodec(CATALOG)


class RecordingRunner:
    """Jobs as coroutines: records each run; ``answers[job]`` lists the exit codes of its runs
    in turn (0 once they run out)."""

    def __init__(self, answers: Mapping[str, list[int]] | None = None) -> None:
        self.runs: list[tuple[str, list[str]]] = []
        self.answers = {job: list(codes) for job, codes in (answers or {}).items()}

    async def run(
        self, job: str, args: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> TaskOutcome:
        self.runs.append((job, list(args)))
        codes = self.answers.get(job) or [0]
        code = codes.pop(0) if len(codes) > 1 or job not in self.answers else codes[0]
        await asyncio.sleep(0)
        return TaskOutcome(code, f"{job} says: exit {code}\n")

    def jobs(self) -> list[str]:
        return [job for job, _ in self.runs]

    def reports(self) -> list[str]:
        return [decode_report(a[0], CODEC).outcome for j, a in self.runs if j == "sync-report"]


def _request(request_id: str = "rq-1") -> SyncRequested:
    return SyncRequested(
        event_id=f"evt-{request_id}",
        occurred_at=datetime(2026, 12, 7, 8, 0, tzinfo=UTC),
        request_id=request_id,
        entity="parcels",
        origin=SyncOrigin.SCHEDULED,
        requester="sync-pull",
        ids=("p-1", "p-2"),
    )


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Broker, WorkflowTriggers, Any]]:
    broker = Broker(tmp_path / "broker", project="p1")
    for name, topic in CATALOG.topics.items():
        broker.create_topic(name, topic.message_retention, exist_ok=True)

    def build(runner: RecordingRunner, timeout_s: str = "60") -> WorkflowEngine:
        engine = WorkflowEngine(
            EmbeddedDocumentStore(tmp_path / "store"),
            clock=FakeClock(),
            jobs=runner,
            env={"MERIDIAN_SYNC_READY_TIMEOUT_S": timeout_s},
            project="p1",
        )
        engine.register_directory(workflows_directory())
        engines.append(engine.open())
        return engine

    engines: list[WorkflowEngine] = []
    yield broker, build  # type: ignore[misc]
    for engine in engines:
        engine.close()


def _publish_and_run(broker: Broker, engine: WorkflowEngine, request: SyncRequested) -> Any:
    triggers = WorkflowTriggers(CATALOG, broker, engine, RetryPolicy(0.0, 0.0))
    triggers.ensure_subscriptions()  # as Eventarc's: only what is published afterwards
    (message_id,) = broker.publish("sync.requests", [CODEC.to_message(request)])
    assert triggers.deliver_once() == 1
    assert triggers.deliver_once() == 0  # acknowledged
    return engine.wait(execution_id("sync-requests", message_id), timeout=30)


def test_a_request_runs_every_job_in_order_and_reports_start_and_end(platform: Any) -> None:
    broker, build = platform
    runner = RecordingRunner()
    engine = build(runner)
    done = _publish_and_run(broker, engine, _request())
    assert done.state == "SUCCEEDED", done.error
    assert runner.jobs() == [
        "sync-report",
        "sync-identities",
        "sync-shipments",
        "sync-ready",
        "sync-reconcile",
        "sync-report",
    ]
    assert runner.reports() == ["started", "ended"]
    # every job gets the Pub/Sub message of the request, decoded to the same SyncRequested
    for job, args in runner.runs:
        if job != "sync-report":
            assert decode_argument(args[0], CODEC) == _request()
    ended = decode_report(runner.runs[-1][1][0], CODEC)
    assert ended.steps == ("sync-identities", "sync-shipments", "sync-ready", "sync-reconcile")
    assert ended.execution_id == done.execution_id
    argument = engine._document(done.execution_id)["argument"]
    assert argument["type"] == EVENT_TYPE
    assert argument["source"] == "//pubsub.googleapis.com/projects/p1/topics/sync.requests"
    assert argument["data"]["subscription"] == "projects/p1/subscriptions/eventarc-sync-requests"
    assert argument["data"]["message"]["attributes"]["eventType"] == "SyncRequested"


def test_a_failing_job_is_reported_as_sync_error_and_fails_the_execution(platform: Any) -> None:
    broker, build = platform
    runner = RecordingRunner({"sync-reconcile": [1]})
    done = _publish_and_run(broker, build(runner), _request())
    assert done.state == "FAILED"
    assert runner.reports() == ["started", "error"]
    error = decode_report(runner.runs[-1][1][0], CODEC)
    assert error.step == "sync-reconcile"
    assert "non-zero status of 1" in error.reason
    assert "sync-reconcile says: exit 1" in error.reason


def test_sync_ready_is_polled_until_ready(platform: Any) -> None:
    broker, build = platform
    runner = RecordingRunner({"sync-ready": [75, 75, 0]})
    done = _publish_and_run(broker, build(runner), _request())
    assert done.state == "SUCCEEDED", done.error
    assert runner.jobs().count("sync-ready") == 3
    assert runner.reports() == ["started", "ended"]


def test_sync_ready_gives_up_at_its_timeout(platform: Any) -> None:
    broker, build = platform
    runner = RecordingRunner({"sync-ready": [75]})  # never ready
    done = _publish_and_run(broker, build(runner, timeout_s="20"), _request())
    assert done.state == "FAILED"
    polls = runner.jobs().count("sync-ready")
    assert 3 <= polls <= 6  # pauses of 1, 2, 4, 8 ... s within 20 s, never one blind sleep
    error = decode_report(runner.runs[-1][1][0], CODEC)
    assert (error.step, error.reason[:18]) == ("sync-ready", "not ready after 20")
    assert "sync-reconcile" not in runner.jobs()


def test_the_report_job_publishes_the_run_status(platform: Any) -> None:
    class Capture:
        def __init__(self) -> None:
            self.sent: list[tuple[str, Message]] = []

        def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
            self.sent += [(topic, m) for m in messages]
            return [str(len(self.sent))]

    request = _request("rq-7")
    message = {
        "data": base64.b64encode(CODEC.to_message(request).data).decode(),
        "attributes": dict(CODEC.to_message(request).attributes),
    }

    def argument(report: dict[str, Any]) -> str:
        return base64.b64encode(json.dumps({"message": message, **report}).encode()).decode()

    publisher = Capture()
    publish_report(argument({"outcome": "started", "execution_id": "x1"}), CODEC, publisher)  # type: ignore[arg-type]
    publish_report(
        argument(
            {"outcome": "error", "execution_id": "x1", "step": "sync-shipments", "reason": "boom"}
        ),
        CODEC,
        publisher,  # type: ignore[arg-type]
    )
    publish_report(argument({"outcome": "started", "execution_id": "x1"}), CODEC, publisher)  # type: ignore[arg-type]
    events = [CODEC.from_message(m.data, m.attributes) for _, m in publisher.sent]
    assert {t for t, _ in publisher.sent} == {"logistics.events"}
    started, error, again = events
    assert isinstance(started, SyncStarted) and isinstance(error, SyncError)
    assert (started.request_id, started.origin, started.execution_id) == ("rq-7", "scheduled", "x1")
    assert (error.step, error.reason, error.entity) == ("sync-shipments", "boom", "parcels")
    assert again.event_id == started.event_id  # a repeated report is the same event
    assert not isinstance(started, SyncEnded)
