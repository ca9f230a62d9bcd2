"""The executions and callbacks HTTP API (reference §6.9, §6.10), through FastAPI's TestClient."""

from __future__ import annotations

import json
import textwrap
import time

from fastapi.testclient import TestClient

from meridian.embedded.workflows import FakeClock
from meridian.embedded.workflows.api import create_app

from .test_workflows_helpers import make_engine

SOURCE = textwrap.dedent("""
    main:
      params: [args]
      steps:
        - create: {call: events.create_callback_endpoint, result: cb}
        - keep: {assign: [{url: '${cb.url}'}]}
        - wait: {call: events.await_callback, args: {callback: '${cb}', timeout: 60}, result: a}
        - done: {return: {who: '${args.who}', body: '${a.http_request.body}'}}
""")


def test_start_get_list_callback_steps_and_cancel() -> None:
    clock = FakeClock(auto=False)
    engine = make_engine(clock=clock)
    engine.register("offer", SOURCE)
    with TestClient(create_app(engine)) as client:
        started = client.post(
            "/v1/workflows/offer/executions",
            json={"argument": json.dumps({"who": "d1"}), "executionId": "e1"},
        )
        assert started.status_code == 200 and started.json()["state"] == "ACTIVE"
        again = client.post("/v1/workflows/offer/executions", json={"executionId": "e1"})
        assert again.json()["executionId"] == "e1"
        deadline = time.monotonic() + 10
        while clock.waiting == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        callback = "/v1/callbacks/e1/cb1"
        assert client.post("/v1/callbacks/e1/nope", json={}).status_code == 404
        assert client.post(callback, json={"accepted": True}).status_code == 200
        engine.wait("e1")
        body = client.get("/v1/executions/e1").json()
        assert body["state"] == "SUCCEEDED"
        assert json.loads(body["result"]) == {"who": "d1", "body": {"accepted": True}}
        assert client.post(callback, json={}).status_code == 404  # finished → 404
        listed = client.get("/v1/executions", params={"workflow": "offer"}).json()["executions"]
        assert [e["executionId"] for e in listed] == ["e1"]
        steps = client.get("/v1/executions/e1/steps").json()["steps"]
        assert [s["step"] for s in steps] == ["create", "keep", "wait", "done"]

        second = client.post("/v1/workflows/offer/executions", json={"argument": {"who": "d2"}})
        cancelled = client.post(f"/v1/executions/{second.json()['executionId']}:cancel").json()
        assert cancelled["state"] == "CANCELLED"
        assert client.get("/v1/executions/missing").status_code == 404
        assert client.post("/v1/workflows/unknown/executions", json={}).status_code == 404
