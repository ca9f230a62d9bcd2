"""The live map runs as a position writer and a tracking-stream process, as production deploys
it: ``meridian up`` starts both (one port each), ``--services live-map`` keeps them together,
and each process serves only its role."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from meridian.app.tracking import TrackingTokens
from meridian.catalog import load_catalog
from meridian.concurrency.offload import Inline
from meridian.config import Settings
from meridian.domain.actors import Actor
from meridian.domain.errors import Unauthenticated
from meridian.ports import IdentityVerifier
from meridian.runtime.cli import _chosen
from meridian.runtime.supervisor import runnable_services
from services.live_map.app import create_app
from services.live_map.bootstrap import LiveMap, MapOptions, Role
from services.live_map.pings import PingDecoder
from services.live_map.tracking import TrackingDeps
from services.live_map.writer import PositionWriter
from tests.fakes import FakeDocumentStore, FakeSubscriber


def test_meridian_up_runs_the_writer_and_the_streams_as_two_processes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, base_port=9000)
    processes = {
        p.name: p for p in runnable_services(load_catalog(), settings) if p.belongs_to("live-map")
    }
    assert processes.keys() == {"live-map", "live-map-writer"}
    assert processes["live-map"].env == {"LIVE_MAP_ROLE": "streams"}
    assert processes["live-map-writer"].env == {"LIVE_MAP_ROLE": "writer"}
    assert processes["live-map"].port != processes["live-map-writer"].port
    # Choosing the service chooses both of its processes.
    chosen = {p.name for p in _chosen(list(processes.values()), "live-map")}
    assert chosen == {"live-map", "live-map-writer"}


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="LIVE_MAP_ROLE"):
        MapOptions.from_env({"LIVE_MAP_ROLE": "both"})


class NoDispatchers(IdentityVerifier):
    def verify(self, token: str) -> Actor:
        raise Unauthenticated("no dispatcher tokens in this test")


def live_map(role: Role) -> LiveMap:
    store = FakeDocumentStore()
    options = MapOptions(role=role)
    writer = None
    if options.runs_writer:
        pings = PingDecoder(load_catalog())
        clock = lambda: datetime.now(UTC)  # noqa: E731
        writer = PositionWriter(store, FakeSubscriber(), pings, clock=clock, interval_s=2.0)
    tracking = TrackingDeps(store, TrackingTokens(b"k" * 32), time.time)
    return LiveMap(tracking=tracking, verifier=NoDispatchers(), writer=writer, options=options)


@pytest.mark.parametrize(
    ("role", "has_writer", "serves_pages"),
    [("all", True, True), ("streams", False, True), ("writer", True, False)],
)
def test_each_role_serves_only_its_part(role: Role, has_writer: bool, serves_pages: bool) -> None:
    with TestClient(create_app(live_map(role))) as client:
        health = client.get("/healthz").json()
        assert health["role"] == role
        assert ("writer" in health) is has_writer
        assert (client.get("/map").status_code == 200) is serves_pages
        assert (client.get("/v1/track/p-1").status_code != 404) is serves_pages


@pytest.mark.parametrize(("role", "inline_io"), [("writer", True), ("all", False)])
def test_only_a_writer_alone_commits_on_its_event_loop_thread(
    tmp_path: Path, role: Role, inline_io: bool
) -> None:
    from services.live_map.bootstrap import bootstrap

    live_map = bootstrap(Settings(data_dir=tmp_path), MapOptions(role=role))
    assert live_map.writer is not None
    # With the tracking streams in the process, a commit must not hold up the event loop.
    assert isinstance(live_map.writer.io, Inline) is inline_io
