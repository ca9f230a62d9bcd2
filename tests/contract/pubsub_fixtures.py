"""Fixtures for the Pub/Sub contract suite: the embedded adapter in-process, the Google adapter
(the official client) against the embedded broker's gRPC front end on a free loopback port (both
on a broker whose clock the test drives, so deadlines and backoff need no sleeping), and the
Google adapter against Google's own Pub/Sub emulator (``google_pubsub_emulator``; set up with the
official admin calls, on the wall clock: a test that moves the clock is skipped there, saying so)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from meridian.embedded.pubsub import Broker, EmbeddedPubSub, SubscriptionConfig
from meridian.embedded.pubsub.grpc_server import serve
from meridian.ports import Publisher, Subscriber
from tests.e2e_gcp import emulators


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
    broker: Broker | EmulatorAdmin
    clock: FakeClock | WallClock

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


# Google's Pub/Sub emulator ------------------------------------------------------------------------

EMULATOR_PROJECT = "contract-emulator"


class WallClock:
    """The emulator's clock is the wall clock: a test that moves time is skipped there."""

    def __call__(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> NoReturn:
        pytest.skip(
            f"Google's Pub/Sub emulator runs on the wall clock; this test moves it {seconds:g} s "
            "ahead (covered on the brokers whose clock the test drives)"
        )


class EmulatorAdmin:
    """The setup calls the suite makes on a broker, made with Google's admin API (as Terraform
    would make them) on the emulator."""

    def __init__(self, project: str) -> None:
        from tests.e2e_gcp.topology import GoogleTopology

        self.topology = GoogleTopology(project)
        self.clock = WallClock()

    def create_topic(self, name: str) -> None:
        self.topology.create_topic(name)

    def create_subscription(self, config: SubscriptionConfig) -> None:
        self.topology.create_subscription(config)

    def metrics(self, subscription: str) -> Any:
        pytest.skip(
            "Google's Pub/Sub emulator has no subscription metrics (backlog and dead-letter "
            "counts are Cloud Monitoring's)"
        )

    def close(self) -> None:
        self.topology.close()


def google_pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Google's Pub/Sub emulator, as a session fixture's body: yields its host (a failure, not a
    skip, when it is missing)."""
    log = tmp_path_factory.mktemp("pubsub-emulator") / "emulator.log"
    with emulators.pubsub(EMULATOR_PROJECT, log) as emulator:
        yield emulator.host


def emulator_world(host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubWorld]:
    from meridian.gcp.pubsub import GcpPubSub

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    admin = EmulatorAdmin(EMULATOR_PROJECT)
    adapter = GcpPubSub(EMULATOR_PROJECT)
    try:
        yield PubSubWorld(adapter, adapter, admin, admin.clock)
    finally:
        adapter.close()
        admin.close()
