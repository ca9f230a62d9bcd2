"""The only place the live-map service's adapters are built."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from meridian import adapters
from meridian.catalog import load_catalog
from meridian.concurrency.offload import InThread
from meridian.config import Settings
from meridian.ports import IdentityVerifier
from meridian.resources import package_directory
from services.live_map.pings import PingDecoder
from services.live_map.positions import DEFAULT_INTERVAL_S
from services.live_map.tracking import TrackingDeps
from services.live_map.writer import DEFAULT_MAX_OUTSTANDING, PositionWriter

LEAFLET = package_directory("services.live_map", "static", "leaflet")  # vendored, with its licence

Role = Literal["all", "streams", "writer"]
ROLES: tuple[Role, ...] = ("all", "streams", "writer")


@dataclass(frozen=True)
class MapOptions:
    """The live map's own options, read by ``from_env`` from the environment mapping its
    entrypoint also builds ``Settings`` from (``meridian.config.environment()``):
    ``LIVE_MAP_ROLE``, ``LIVE_MAP_DEBOUNCE_S`` (default 2), ``LIVE_MAP_MAX_OUTSTANDING``,
    ``LIVE_MAP_TILE_URL`` (base tiles; empty, the default, draws stops and routes on a plain
    background and needs no network), ``LIVE_MAP_TILE_ATTRIBUTION``, ``LIVE_MAP_ASSETS``
    (a folder with Leaflet's ``dist`` files; default the Leaflet 1.9.4 packaged with the service,
    ``static/leaflet/``, so an installed wheel serves the pages with nothing else installed).

    The role says what a process does: ``all`` (the default) runs the position writer and serves
    the tracking streams and pages; ``streams`` serves them without a writer (replicas that scale
    with customers); ``writer`` runs the writer alone, answering only ``/healthz``. ``meridian up``
    runs one ``streams`` and one ``writer`` process, as production deploys them: at the morning
    peak the writer needs most of a core, and the streams must not queue behind it."""

    role: Role = "all"
    debounce_s: float = DEFAULT_INTERVAL_S
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING
    tile_url: str = ""
    tile_attribution: str = ""
    leaflet_dir: Path = LEAFLET

    @property
    def runs_writer(self) -> bool:
        return self.role in ("all", "writer")

    @property
    def serves_streams(self) -> bool:
        return self.role in ("all", "streams")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MapOptions:
        role = env.get("LIVE_MAP_ROLE", "all")
        if role not in ROLES:
            raise ValueError(f"LIVE_MAP_ROLE must be one of {', '.join(ROLES)}, not {role!r}")
        return cls(
            role=role,  # checked just above
            debounce_s=float(env.get("LIVE_MAP_DEBOUNCE_S", DEFAULT_INTERVAL_S)),
            max_outstanding=int(env.get("LIVE_MAP_MAX_OUTSTANDING", DEFAULT_MAX_OUTSTANDING)),
            tile_url=env.get("LIVE_MAP_TILE_URL", ""),
            tile_attribution=env.get("LIVE_MAP_TILE_ATTRIBUTION", ""),
            leaflet_dir=Path(env.get("LIVE_MAP_ASSETS", str(cls.leaflet_dir))),
        )


@dataclass(frozen=True)
class LiveMap:
    tracking: TrackingDeps
    verifier: IdentityVerifier
    writer: PositionWriter | None
    options: MapOptions


def bootstrap(settings: Settings, options: MapOptions) -> LiveMap:
    # The writer role writes the live-map store (its own role in the catalog); the streams only
    # read it, and the parcels and status views of other stores.
    service = "live-map-writer" if options.role == "writer" else "live-map"
    store = adapters.document_store(settings, service=service)
    writer = None
    if options.runs_writer:
        writer = PositionWriter(
            store,
            adapters.subscriber(settings),
            PingDecoder(load_catalog()),
            clock=lambda: datetime.now(UTC),
            interval_s=options.debounce_s,
            max_outstanding=options.max_outstanding,
            # Inline only where the writer runs alone: the streams would wait behind commits.
            io=adapters.offload(settings) if options.role == "writer" else InThread(),
        )
    return LiveMap(
        tracking=TrackingDeps(store, adapters.tracking_tokens(settings), time.time),
        verifier=adapters.identity_verifier(settings),
        writer=writer,
        options=options,
    )
