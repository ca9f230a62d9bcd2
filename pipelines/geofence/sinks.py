"""Which Publisher the job writes with, as a picklable spec built on the worker."""

from __future__ import annotations

from dataclasses import dataclass

from meridian.ports import Publisher


@dataclass(frozen=True)
class PublisherSpec:
    """``embedded``: the broker in ``data_dir``; ``gcp``: Pub/Sub in ``project`` (ordering keys on)."""

    backend: str
    data_dir: str = ".meridian"
    project: str = "meridian-local"

    def build(self) -> Publisher:
        if self.backend == "gcp":
            from meridian.gcp.pubsub import GcpPubSub

            return GcpPubSub(self.project)
        from meridian.embedded.pubsub.adapter import EmbeddedPubSub
        from meridian.embedded.pubsub.broker import Broker

        return EmbeddedPubSub(Broker(self.data_dir, project=self.project))
