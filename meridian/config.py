"""Runtime settings, read from the environment (every CLI flag has its variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Backend = Literal["embedded", "gcp"]

# Fixed offsets from MERIDIAN_BASE_PORT, so a service keeps its port as others are added.
PORT_OFFSETS: dict[str, int] = {
    "platform": 0,
    "command": 1,
    "event-publisher": 2,
    "eta": 3,
    "notification": 4,
    "billing": 5,
    "pod": 6,
    "client-webhook": 7,
    "driver-scoring": 8,
    "live-map": 9,
    "dispatch": 10,
    "sms-gateway": 11,
    "billing-api": 12,
    "live-map-writer": 13,
    "pubsub-grpc": 20,
}


@dataclass(frozen=True)
class Settings:
    backend: Backend = "embedded"
    data_dir: Path = Path(".meridian")
    host: str = "127.0.0.1"
    base_port: int = 8700
    project: str = "meridian-local"
    # The platform identities (service accounts) that sign push, Eventarc and Cloud Scheduler
    # tokens: the embedded platform signs as them, and each endpoint accepts only the one that
    # calls it. Empty means the name terraform/ gives it in ``project`` (see __post_init__).
    push_identity: str = ""
    eventarc_identity: str = ""
    scheduler_identity: str = ""

    def __post_init__(self) -> None:
        defaults = {
            "push_identity": "pubsub-push",
            "eventarc_identity": "eventarc-trigger",
            "scheduler_identity": "scheduler",
        }
        for name, account in defaults.items():
            if not getattr(self, name):
                email = f"{account}@{self.project}.iam.gserviceaccount.com"
                object.__setattr__(self, name, email)  # frozen: set once, while being built

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        backend = env.get("MERIDIAN_BACKEND", "embedded")
        if backend not in ("embedded", "gcp"):
            raise ValueError(f"MERIDIAN_BACKEND must be 'embedded' or 'gcp', not {backend!r}")
        return cls(
            backend=backend,  # type: ignore[arg-type]  # checked just above
            data_dir=Path(env.get("MERIDIAN_DATA_DIR", ".meridian")),
            host=env.get("MERIDIAN_HOST", "127.0.0.1"),
            base_port=int(env.get("MERIDIAN_BASE_PORT", "8700")),
            project=env.get("GOOGLE_CLOUD_PROJECT", "meridian-local"),
            push_identity=env.get("MERIDIAN_PUSH_IDENTITY", ""),
            eventarc_identity=env.get("MERIDIAN_EVENTARC_IDENTITY", ""),
            scheduler_identity=env.get("MERIDIAN_SCHEDULER_IDENTITY", ""),
        )

    def port_of(self, service: str) -> int:
        """The service's port: MERIDIAN_PORT_<NAME> if set, else the base port plus its offset."""
        override = os.environ.get(f"MERIDIAN_PORT_{service.upper().replace('-', '_')}")
        if override:
            return int(override)
        if service not in PORT_OFFSETS:
            raise KeyError(f"no port assigned to service {service!r}; add it to PORT_OFFSETS")
        return self.base_port + PORT_OFFSETS[service]

    def url_of(self, service: str) -> str:
        return f"http://{self.host}:{self.port_of(service)}"
