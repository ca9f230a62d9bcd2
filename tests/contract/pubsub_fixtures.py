"""Fixtures for the Pub/Sub contract suite: the embedded adapter in-process, and the Google
adapter (the official client) against the gRPC front end on a free loopback port. Both share a
broker whose clock the test drives, so deadlines and backoff need no sleeping."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meridian.embedded.pubsub import Broker, EmbeddedPubSub
from meridian.embedded.pubsub.grpc_server import serve
from meridian.ports import Publisher, Subscriber


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class PubSubWorld:
    """What a contract test gets: the ports under test, the broker for setup, the clock."""

    publisher: Publisher
    subscriber: Subscriber
    broker: Broker
    clock: FakeClock

    def name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"


def embedded_world(tmp_path: Path) -> Iterator[PubSubWorld]:
    clock = FakeClock()
    broker = Broker(tmp_path, clock=clock)
    adapter = EmbeddedPubSub(broker)
    yield PubSubWorld(adapter, adapter, broker, clock)
    broker.close()


def grpc_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubWorld]:
    from meridian.gcp.pubsub import GcpPubSub

    clock = FakeClock()
    broker = Broker(tmp_path, project="contract", clock=clock)
    server, port = serve(broker, "127.0.0.1", 0, workers=16)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    adapter = GcpPubSub("contract")
    try:
        yield PubSubWorld(adapter, adapter, broker, clock)
    finally:
        adapter.close()
        server.stop(grace=None)
        broker.close()
