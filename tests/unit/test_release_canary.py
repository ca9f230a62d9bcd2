"""The canary decision (meridian/release/canary.py) on recorded series, and the watch loop on a
recorded-series adapter of the RevisionMetrics port."""

from __future__ import annotations

from meridian.release.canary import (
    RevisionMetrics,
    Sample,
    Slo,
    Soak,
    Verdict,
    judge,
    load_slos,
    watch,
)

SLO = Slo(error_rate=0.01, p99_ms=100)
SOAK = Soak(duration=600, interval=60, min_requests=200, max_duration=1800)


def _steady(minutes: int, requests: int = 60, errors: int = 0, p99: float = 40) -> list[Sample]:
    return [
        Sample(at=60.0 * (m + 1), requests=requests, errors=errors, p99_ms=p99)
        for m in range(minutes)
    ]


class RecordedMetrics(RevisionMetrics):
    """A recorded series, revealed as time passes."""

    def __init__(self, series: list[Sample]) -> None:
        self.series = series

    def samples(self, service: str, tag: str, since: float, until: float) -> list[Sample]:
        return [s for s in self.series if s.at <= until - since]


def test_a_revision_within_the_slo_for_the_soak_is_promoted() -> None:
    decision = judge(_steady(10), SLO, SOAK, elapsed=600)
    assert decision.verdict is Verdict.PROMOTE
    assert "0 errors of 600" in decision.reason


def test_a_p99_breach_during_the_soak_rolls_back() -> None:
    series = [*_steady(3), Sample(at=240, requests=60, errors=0, p99_ms=180), *_steady(2)]
    decision = judge(series, SLO, SOAK, elapsed=360)
    assert decision.verdict is Verdict.ROLL_BACK
    assert "p99 180 ms at 240 s" in decision.reason


def test_an_error_rate_over_the_slo_rolls_back() -> None:
    decision = judge(_steady(5, requests=60, errors=2), SLO, SOAK, elapsed=300)
    assert decision.verdict is Verdict.ROLL_BACK
    assert "error rate 3.33%" in decision.reason


def test_errors_that_breach_even_at_the_minimum_traffic_roll_back_early() -> None:
    series = [Sample(at=60, requests=5, errors=3, p99_ms=20)]
    assert judge(series, SLO, SOAK, elapsed=60).verdict is Verdict.ROLL_BACK
    assert judge(series[:0], SLO, SOAK, elapsed=60).verdict is Verdict.WAIT


def test_a_latency_only_slo_ignores_p99_when_the_service_has_none() -> None:
    series = _steady(10, p99=5000)
    assert judge(series, Slo(error_rate=0.01), SOAK, elapsed=600).verdict is Verdict.PROMOTE


def test_too_little_traffic_extends_the_soak_then_rolls_back() -> None:
    quiet = _steady(30, requests=2)
    assert judge(quiet[:10], SLO, SOAK, elapsed=600).verdict is Verdict.WAIT
    decision = judge(quiet, SLO, SOAK, elapsed=1800)
    assert decision.verdict is Verdict.ROLL_BACK
    assert "too little traffic to judge: 60 requests" in decision.reason


def test_watch_polls_each_interval_until_a_verdict() -> None:
    now = [1000.0]
    seen: list[Verdict] = []
    breach = [*_steady(4), Sample(at=300, requests=60, errors=0, p99_ms=250)]
    decision = watch(
        RecordedMetrics(breach),
        "mrd-dev-command",
        "v1-4-0",
        SLO,
        SOAK,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
        report=lambda d: seen.append(d.verdict),
    )
    assert decision.verdict is Verdict.ROLL_BACK
    assert seen == [Verdict.WAIT] * 4 + [Verdict.ROLL_BACK]


def test_the_slos_are_terraforms_alert_thresholds() -> None:
    assert load_slos("prod", "command")[0] == Slo(error_rate=0.01, p99_ms=100)
    assert load_slos("dev", "command")[0] == Slo(error_rate=0.01, p99_ms=250)
    slo, soak = load_slos("prod", "eta")
    assert slo == Slo(error_rate=0.01) and soak == SOAK
