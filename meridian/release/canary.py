"""The canary decision: promote a new revision, roll it back, or keep watching.

``judge`` is a pure function over what Cloud Monitoring recorded for the revision while it took
its share of the traffic (``Sample`` per alignment period), against the SLOs of
meridian/release/slos.yaml (the same thresholds as Terraform's alerts):

- any period whose p99 exceeds the service's ``p99_ms`` rolls back (stricter than the alert,
  which waits for 5 minutes: a canary is cheap to roll back and a real breach is not);
- an error rate (5xx / requests, over the soak so far) above ``error_rate`` rolls back, as soon
  as enough requests were seen to tell, or as soon as the errors alone would breach it at
  ``min_requests``;
- a soak that ends within the SLOs with at least ``min_requests`` promotes;
- too little traffic to judge extends the soak up to ``max_duration``, then rolls back and fails
  the release: a revision nobody could judge is never promoted.

``watch`` polls a ``RevisionMetrics`` (the port; meridian/gcp/monitoring.py reads Cloud
Monitoring) once per interval until the verdict is not WAIT.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from meridian.catalog import parse_duration
from meridian.resources import package_directory


@dataclass(frozen=True)
class Sample:
    """One alignment period of a revision's traffic, ``at`` seconds after its canary began."""

    at: float
    requests: int
    errors: int  # answered 5xx
    p99_ms: float | None  # None when the period had no request


class RevisionMetrics(ABC):
    """What a revision's requests did, per alignment period, as the monitoring system recorded it."""

    @abstractmethod
    def samples(self, service: str, tag: str, since: float, until: float) -> list[Sample]:
        """The periods of the revision of Cloud Run service ``service`` tagged ``tag`` between the
        Unix times ``since`` and ``until``, oldest first, ``at`` counted from ``since``."""


@dataclass(frozen=True)
class Slo:
    error_rate: float
    p99_ms: float | None = None


@dataclass(frozen=True)
class Soak:
    duration: float
    interval: float
    min_requests: int
    max_duration: float


class Verdict(Enum):
    PROMOTE = "promote"
    ROLL_BACK = "roll back"
    WAIT = "wait"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


def judge(samples: Sequence[Sample], slo: Slo, soak: Soak, elapsed: float) -> Decision:
    """The decision after ``elapsed`` seconds of soak, on the periods recorded so far."""
    for sample in samples:
        if slo.p99_ms is not None and sample.p99_ms is not None and sample.p99_ms > slo.p99_ms:
            return Decision(
                Verdict.ROLL_BACK,
                f"p99 {sample.p99_ms:g} ms at {sample.at:g} s is over the SLO's {slo.p99_ms:g} ms",
            )
    requests = sum(s.requests for s in samples)
    errors = sum(s.errors for s in samples)
    rate = errors / requests if requests else 0.0
    if errors > slo.error_rate * max(requests, soak.min_requests):
        return Decision(
            Verdict.ROLL_BACK,
            f"error rate {rate:.2%} ({errors} of {requests}) is over the SLO's {slo.error_rate:.2%}",
        )
    if elapsed < soak.duration:
        return Decision(Verdict.WAIT, f"soaking: {elapsed:g} of {soak.duration:g} s")
    if requests < soak.min_requests:
        if elapsed < soak.max_duration:
            return Decision(
                Verdict.WAIT,
                f"{requests} requests, fewer than {soak.min_requests} to judge: soak extended",
            )
        return Decision(
            Verdict.ROLL_BACK,
            f"too little traffic to judge: {requests} requests in {elapsed:g} s "
            f"(at least {soak.min_requests} needed)",
        )
    worst = max((s.p99_ms for s in samples if s.p99_ms is not None), default=None)
    p99 = f", worst p99 {worst:g} ms" if worst is not None else ""
    return Decision(
        Verdict.PROMOTE, f"within the SLOs over {elapsed:g} s: {errors} errors of {requests}{p99}"
    )


def watch(
    metrics: RevisionMetrics,
    service: str,
    tag: str,
    slo: Slo,
    soak: Soak,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[Decision], None] = lambda d: None,
) -> Decision:
    """Poll ``metrics`` once per interval from now until the decision is not WAIT."""
    start = clock()
    while True:
        sleep(soak.interval)
        now = clock()
        decision = judge(metrics.samples(service, tag, start, now), slo, soak, now - start)
        report(decision)
        if decision.verdict is not Verdict.WAIT:
            return decision


def slos_file() -> Path:
    return package_directory("meridian.release") / "slos.yaml"


def load_slos(environment: str, service: str, path: Path | None = None) -> tuple[Slo, Soak]:
    """The SLO of catalog service ``service`` in ``environment``, and the soak, from slos.yaml."""
    raw = yaml.safe_load((path or slos_file()).read_text())
    per_service = (raw.get("environments") or {}).get(environment, {}).get(service, {})
    slo = Slo(**{**raw["default"], **per_service})
    soak = raw["soak"]
    return slo, Soak(
        duration=parse_duration(soak["duration"]),
        interval=parse_duration(soak["interval"]),
        min_requests=int(soak["min_requests"]),
        max_duration=parse_duration(soak["max_duration"]),
    )
