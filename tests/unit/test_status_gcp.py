"""`meridian status` on gcp: the rows and verdicts read from Cloud Monitoring's ``timeSeries.list``,
answered by a stand-in transport with recorded JSON (the response's shape as Google documents it:
``timeSeries[]`` of ``metric``, ``resource``, ``metricKind``, ``valueType`` and ``points[]``, each
an ``interval`` and a typed ``value``, INT64 as a string; newest point first)."""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console

from meridian.catalog import load_catalog
from meridian.gcp.monitoring import CloudMonitoring
from meridian.runtime.status_cli import (
    CloudMonitoringVitalSigns,
    ServiceVitals,
    Status,
    SubscriptionVitals,
    Thresholds,
    render,
)

NOW = 1_760_000_000.0  # 2025-10-09T08:53:20Z
LIMITS = Thresholds({"default": 600.0}, max_dead_letter_depth=0, max_eventarc_lag_changes=1000)

BACKLOG = "pubsub.googleapis.com/subscription/num_undelivered_messages"
AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
INSTANCES = "run.googleapis.com/container/instance_count"
REQUESTS = "run.googleapis.com/request_count"


def _point(end: str, value: int) -> dict[str, Any]:
    return {
        "interval": {"startTime": end, "endTime": end},
        "value": {"int64Value": str(value)},
    }


def _subscription(metric: str, subscription: str, *values: int) -> dict[str, Any]:
    """A subscription's series, newest point first (one a minute, ending 08:53)."""
    ends = ["2025-10-09T08:53:00Z", "2025-10-09T08:52:00Z", "2025-10-09T08:51:00Z"]
    return {
        "metric": {"type": metric},
        "resource": {
            "type": "pubsub_subscription",
            "labels": {"project_id": "meridian-prod", "subscription_id": subscription},
        },
        "metricKind": "GAUGE",
        "valueType": "INT64",
        "points": [_point(end, v) for end, v in zip(ends, values, strict=False)],
    }


def _run(metric: str, service: str, value: int, code_class: str | None = None) -> dict[str, Any]:
    labels = {"response_code_class": code_class} if code_class else {}
    return {
        "metric": {"type": metric, "labels": labels},
        "resource": {
            "type": "cloud_run_revision",
            "labels": {"project_id": "meridian-prod", "service_name": service},
        },
        "metricKind": "GAUGE" if metric == INSTANCES else "DELTA",
        "valueType": "INT64",
        "points": [_point("2025-10-09T08:53:00Z", value)],
    }


RECORDED: dict[str, list[dict[str, Any]]] = {
    BACKLOG: [
        _subscription(BACKLOG, "billing", 42, 30, 12),
        _subscription(BACKLOG, "eta", 0, 5),
        _subscription(BACKLOG, "eta-dead-letters", 3, 3),
        _subscription(BACKLOG, "pod", 1),
    ],
    AGE: [
        _subscription(AGE, "billing", 900, 840, 780),
        _subscription(AGE, "eta", 0, 60),
        _subscription(AGE, "eta-dead-letters", 7200),
        _subscription(AGE, "pod", 2),
    ],
    INSTANCES: [
        _run(INSTANCES, "mer-command", 2),
        _run(INSTANCES, "mer-live-map-writer", 1),
        _run(INSTANCES, "mer-notification", 1),
        _run(INSTANCES, "mer-pod", 1),
    ],
    REQUESTS: [
        _run(REQUESTS, "mer-command", 1200, "2xx"),
        _run(REQUESTS, "mer-command", 3, "5xx"),
        _run(REQUESTS, "mer-notification", 8, "5xx"),
        _run(REQUESTS, "mer-pod", 4, "2xx"),
    ],
}


def _monitoring(
    recorded: dict[str, list[dict[str, Any]]], asked: list[httpx.Request]
) -> CloudMonitoring:
    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        assert request.url.path == "/v3/projects/meridian-prod/timeSeries"
        (metric,) = [m for m in recorded if f'metric.type = "{m}"' in request.url.params["filter"]]
        return httpx.Response(200, json={"timeSeries": recorded[metric], "unit": "1"})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    return CloudMonitoring("meridian-prod", client, clock=lambda: NOW)


def _status(
    recorded: dict[str, list[dict[str, Any]]], asked: list[httpx.Request] | None = None
) -> Status:
    monitoring = _monitoring(recorded, [] if asked is None else asked)
    reader = CloudMonitoringVitalSigns(monitoring, load_catalog(), LIMITS, prefix="mer")
    return reader.read().judge(LIMITS)


def test_subscription_rows_come_from_the_newest_points_and_the_dead_letter_keepers() -> None:
    rows = {s.subscription: s for s in _status(RECORDED).subscriptions}

    assert rows["billing"] == SubscriptionVitals("billing", 42, 900.0, 0, 600.0)
    assert rows["eta"] == SubscriptionVitals("eta", 0, 0.0, 3, 600.0)
    assert rows["pod"] == SubscriptionVitals("pod", 1, 2.0, 0, 600.0)
    # not yet reported by Pub/Sub: zeros, not an error
    assert rows["geofence"] == SubscriptionVitals("geofence", 0, 0.0, 0, 600.0)
    assert "eta-dead-letters" not in rows  # a keeper is its source's dead-letter depth


def test_services_are_up_unless_cold_below_their_floor_or_failing_every_request() -> None:
    services = {s.service: s for s in _status(RECORDED).services}

    assert services["command"] == ServiceVitals("command", "mer-command", True, None)
    assert services["eta"].up is False  # min_instances 2 and no instance
    assert services["notification"].up is False  # every request a 5xx
    assert services["pod"].up is True
    assert services["billing"].up is True  # scaled to zero, idle: nothing to say it is down
    assert services["live-map-writer"].up is True
    assert "geofence-pipeline" not in services  # on Dataflow
    assert all(s.restarts is None for s in services.values())
    assert _status(RECORDED).eventarc == []


def test_breaches_name_each_red_vital_sign() -> None:
    assert _status(RECORDED).breaches == [
        "billing: oldest unacked 900s > 600s",
        "eta: 3 dead letters",
        "eta: down",
        "notification: down",
    ]


def test_the_screen_is_red_where_a_sign_breaches_and_green_when_none_does() -> None:
    console = Console(record=True, width=160, color_system=None)
    console.print(render(_status(RECORDED), LIMITS))
    red = console.export_text()
    assert "DOWN" in red
    assert "eta: 3 dead letters" in red
    assert "all vital signs within their thresholds" not in red

    healthy = {
        BACKLOG: [_subscription(BACKLOG, "billing", 2)],
        AGE: [_subscription(AGE, "billing", 4)],
        INSTANCES: [
            _run(INSTANCES, "mer-command", 2),
            _run(INSTANCES, "mer-eta", 2),
            _run(INSTANCES, "mer-live-map-writer", 1),
        ],
        REQUESTS: [_run(REQUESTS, "mer-command", 50, "2xx")],
    }
    status = _status(healthy)
    assert status.breaches == []
    console = Console(record=True, width=160, color_system=None)
    console.print(render(status, LIMITS))
    assert "all vital signs within their thresholds" in console.export_text()


def test_the_queries_ask_for_our_subscriptions_and_prefixed_services_over_five_minutes() -> None:
    asked: list[httpx.Request] = []
    _status(RECORDED, asked)

    filters = [r.url.params["filter"] for r in asked]
    assert len(asked) == 4
    assert '"billing-dead-letters"' in filters[0] and '"billing"' in filters[0]
    assert 'resource.labels.service_name = one_of("mer-billing"' in filters[2]
    assert "mer-geofence-pipeline" not in filters[2]
    first = asked[0].url.params
    assert first["interval.startTime"] == "2025-10-09T08:48:20Z"
    assert first["interval.endTime"] == "2025-10-09T08:53:20Z"
    assert asked[3].url.params.get_list("aggregation.groupByFields") == [
        "resource.labels.service_name",
        "metric.labels.response_code_class",
    ]
