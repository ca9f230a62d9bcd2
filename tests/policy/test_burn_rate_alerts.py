"""The SLO alerts are burn-rate alerts (#22 item 4): multi-window (each policy ANDs a long and a
short window of one pair in slos.yaml), each condition a ratio of bad to total (never a raw count
or a threshold on a gauge), over the three SLOs the issue names. The check is also shown to report
broken snippets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import yaml

REPO = Path(__file__).resolve().parents[2]
BURN_RATE_TF = REPO / "terraform" / "modules" / "monitoring" / "burn_rate.tf"
SLOS = REPO / "meridian" / "release" / "slos.yaml"
REQUIRED_SLOS = {"delivery_confirmation_p99", "event_end_to_end_lag", "telemetry_freshness"}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(window: str) -> int:
    return int(window[:-1]) * _SECONDS[window[-1]]


def _is_ratio(query: str) -> bool:
    """A bad-to-total ratio: one rate divided by another, or the mean of a 0/1 (``> bool``)
    series over a window (the share of bad minutes)."""
    divided = re.search(r"rate\(.*\)\s*/\s*sum\(rate\(", query) is not None
    share_of_minutes = "avg_over_time(" in query and "> bool" in query
    return divided or share_of_minutes


def check_burn_rate(tf_text: str, slos: dict[str, Any]) -> list[str]:
    """What is wrong with the burn-rate alerts of ``tf_text`` against ``slos`` (slos.yaml)."""
    problems: list[str] = []
    burn = slos.get("burn_rate") or {}
    named = set(burn.get("slos") or {})
    if not named >= REQUIRED_SLOS:
        problems.append(f"slos.yaml burn_rate.slos lacks {sorted(REQUIRED_SLOS - named)}")
    pairs = burn.get("alerts") or {}
    if len(pairs) < 2:
        problems.append("fewer than two burn-rate pairs (a fast and a slow one)")
    for name, pair in pairs.items():
        if _seconds(pair["long"]) <= _seconds(pair["short"]):
            problems.append(f"{name}: the long window is not longer than the short one")
        if pair["factor"] <= 1:
            problems.append(f"{name}: a factor of {pair['factor']} is no faster than the budget")
    parsed = hcl2.loads(tf_text)
    locals_ = {k: v for block in parsed.get("locals", []) for k, v in block.items()}
    shares: dict[str, str] = locals_.get("bad_share") or {}
    for slo in named:
        query = shares.get(slo)
        if query is None:
            problems.append(f"{slo}: no bad_share query")
        elif not _is_ratio(str(query)):
            problems.append(f"{slo}: bad_share is not a ratio of bad to total: {query}")
        elif "WINDOW" not in str(query):
            problems.append(f"{slo}: bad_share has no WINDOW to put each window in")
    policies = [
        body
        for resource in parsed.get("resource", [])
        for kind, named_bodies in resource.items()
        if kind.strip('"') == "google_monitoring_alert_policy"
        for body in named_bodies.values()
    ]
    if not policies:
        problems.append("no alert policy")
    for policy in policies:
        if str(policy.get("combiner")).strip('"') != "AND":
            problems.append(f"combiner {policy.get('combiner')}: both windows must breach (AND)")
        conditions = policy.get("conditions", [])
        if len(conditions) != 2:
            problems.append(f"{len(conditions)} conditions, not a long and a short window")
        queries = []
        for condition in conditions:
            promql = condition.get("condition_prometheus_query_language")
            if not promql:
                problems.append(f"a condition that is not a PromQL ratio: {sorted(condition)}")
                continue
            query = promql[0]["query"] if isinstance(promql, list) else promql["query"]
            queries.append(str(query))
            if "bad_share" not in str(query) or "max_bad_share" not in str(query):
                problems.append(f"a condition not comparing a bad share to the budget: {query}")
        if len(queries) == 2 and not (
            "each.value.long" in queries[0] and "each.value.short" in queries[1]
        ):
            problems.append("the two conditions are not the long then the short window")
    return problems


def test_the_slo_alerts_are_multi_window_burn_rates() -> None:
    assert check_burn_rate(BURN_RATE_TF.read_text(), yaml.safe_load(SLOS.read_text())) == []


def test_the_pairs_are_the_workbooks_page_and_ticket() -> None:
    pairs = yaml.safe_load(SLOS.read_text())["burn_rate"]["alerts"]
    assert (pairs["fast"]["long"], pairs["fast"]["short"], pairs["fast"]["factor"]) == (
        "1h",
        "5m",
        14.4,
    )
    assert (pairs["slow"]["long"], pairs["slow"]["short"], pairs["slow"]["factor"]) == (
        "6h",
        "30m",
        6,
    )


def test_the_check_reports_broken_snippets() -> None:
    text = BURN_RATE_TF.read_text()
    slos = yaml.safe_load(SLOS.read_text())
    assert any("AND" in p for p in check_burn_rate(text.replace('"AND"', '"OR"'), slos))
    raw_count = text.replace(" / sum(rate(meridian_event_lag_seconds_count[WINDOW])))", ") * 60")
    assert raw_count != text
    assert any("event_end_to_end_lag" in p for p in check_burn_rate(raw_count, slos))
    one_window = re.sub(
        r"\n  conditions \{\n    display_name = \"bad share over \$\{each\.value\.short\}.*?\n  \}\n",
        "\n",
        text,
        flags=re.S,
    )
    assert one_window != text
    assert any("conditions" in p for p in check_burn_rate(one_window, slos))
    no_freshness = {
        **slos,
        "burn_rate": {
            **slos["burn_rate"],
            "slos": {
                k: v for k, v in slos["burn_rate"]["slos"].items() if k != "telemetry_freshness"
            },
        },
    }
    assert any("telemetry_freshness" in p for p in check_burn_rate(text, no_freshness))
