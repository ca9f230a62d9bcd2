"""Cloud Monitoring over REST, for the release canary and for ``meridian status`` on gcp.

A thin adapter over two REST APIs with httpx. ``CloudMonitoring`` holds the one
``timeSeries.list`` (v3) query code and the Application Default Credentials hook; on it,
``subscription_vital_signs`` reads Pub/Sub's ``subscription/num_undelivered_messages`` and
``subscription/oldest_unacked_message_age`` per subscription, and ``cloud_run_vital_signs``
Cloud Run's ``container/instance_count`` and ``request_count`` per service (both for
meridian/runtime/status_cli.py). ``CloudMonitoringMetrics`` is the canary's ``RevisionMetrics``
(meridian/release/canary.py): Cloud Run's Admin API (v2) finds the revision a traffic tag points
at, and ``timeSeries.list`` reads that revision's ``run.googleapis.com/request_count`` (per
response-code class, summed per period) and ``run.googleapis.com/request_latencies`` (99th
percentile per period). Not the google-cloud-monitoring client: it is in the lock only as a
dependency of Beam's Google extras (the ``pipeline`` extra), which the release job does not
install.

Needs a real project and credentials (Application Default Credentials: in the release workflow,
the deployer's, from Workload Identity Federation); no emulator serves these APIs, so the tests
judge recorded series: the canary's through its port, the status's through a stand-in transport
answering recorded ``timeSeries`` JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from meridian.release.canary import RevisionMetrics, Sample

MONITORING = "https://monitoring.googleapis.com/v3"
RUN = "https://run.googleapis.com/v2"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# Pub/Sub samples its subscription metrics every 60 s and they show up to ~2 min later: a window
# of 5 min always holds a recent point. The newest point is the figure shown.
VITAL_SIGNS_WINDOW_S = 300.0


@dataclass(frozen=True)
class SubscriptionSignals:
    """A subscription's newest figures in Cloud Monitoring."""

    backlog: int  # num_undelivered_messages
    oldest_unacked_age_s: float  # oldest_unacked_message_age


@dataclass(frozen=True)
class CloudRunSignals:
    """A Cloud Run service over the window: its newest instance count (all revisions, active and
    idle) and the requests it answered, of which ``errors`` were 5xx."""

    instances: int
    requests: int
    errors: int


def authorised_client() -> httpx.Client:
    """An httpx client with Application Default Credentials, refreshed before each request's
    token expires."""
    import google.auth
    from google.auth.transport.requests import Request

    credentials, _ = google.auth.default(scopes=list(SCOPES))

    def authorise(request: httpx.Request) -> None:
        if not credentials.valid:
            credentials.refresh(Request())
        request.headers["Authorization"] = f"Bearer {credentials.token}"

    return httpx.Client(timeout=30, event_hooks={"request": [authorise]})


class CloudMonitoring:
    """``timeSeries.list`` of one project, and the vital signs ``meridian status`` reads."""

    def __init__(
        self,
        project: str,
        client: httpx.Client,
        period_seconds: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.project = project
        self.client = client
        self.period = period_seconds
        self.clock = clock

    def subscription_vital_signs(
        self, subscriptions: Sequence[str]
    ) -> dict[str, SubscriptionSignals]:
        """Backlog and oldest unacked age of each of ``subscriptions`` (their ids); one without a
        point in the window is left out (Pub/Sub has not reported it yet)."""
        until = self.clock()
        since = until - VITAL_SIGNS_WINDOW_S
        where = (
            'resource.type = "pubsub_subscription" AND resource.labels.subscription_id = '
            + _one_of(subscriptions)
        )
        by = ("resource.labels.subscription_id",)
        backlog = self._newest(
            self._series(
                f"{where} AND metric.type = "
                '"pubsub.googleapis.com/subscription/num_undelivered_messages"',
                since,
                until,
                aligner="ALIGN_MAX",
                reducer="REDUCE_MAX",
                group_by=by,
            ),
            "subscription_id",
        )
        age = self._newest(
            self._series(
                f"{where} AND metric.type = "
                '"pubsub.googleapis.com/subscription/oldest_unacked_message_age"',
                since,
                until,
                aligner="ALIGN_MAX",
                reducer="REDUCE_MAX",
                group_by=by,
            ),
            "subscription_id",
        )
        return {
            name: SubscriptionSignals(int(backlog.get(name, 0)), age.get(name, 0.0))
            for name in subscriptions
            if name in backlog or name in age
        }

    def cloud_run_vital_signs(self, services: Sequence[str]) -> dict[str, CloudRunSignals]:
        """Instances and requests of each of ``services`` (Cloud Run service names); one with
        neither in the window (scaled to zero and idle) is left out."""
        until = self.clock()
        since = until - VITAL_SIGNS_WINDOW_S
        where = (
            'resource.type = "cloud_run_revision" AND resource.labels.service_name = '
            + _one_of(services)
        )
        instances = self._newest(
            self._series(
                f'{where} AND metric.type = "run.googleapis.com/container/instance_count"',
                since,
                until,
                aligner="ALIGN_MAX",
                reducer="REDUCE_SUM",
                group_by=("resource.labels.service_name",),
            ),
            "service_name",
        )
        requests: dict[str, int] = {}
        errors: dict[str, int] = {}
        for series in self._series(
            f'{where} AND metric.type = "run.googleapis.com/request_count"',
            since,
            until,
            aligner="ALIGN_DELTA",
            reducer="REDUCE_SUM",
            group_by=("resource.labels.service_name", "metric.labels.response_code_class"),
        ):
            name = series.get("resource", {}).get("labels", {}).get("service_name", "")
            code_class = series.get("metric", {}).get("labels", {}).get("response_code_class", "")
            count = sum(int(value) for _, value in _points(series, since))
            requests[name] = requests.get(name, 0) + count
            if code_class == "5xx":
                errors[name] = errors.get(name, 0) + count
        return {
            name: CloudRunSignals(
                int(instances.get(name, 0)), requests.get(name, 0), errors.get(name, 0)
            )
            for name in services
            if name in instances or name in requests
        }

    @staticmethod
    def _newest(series: list[dict[str, Any]], label: str) -> dict[str, float]:
        """Per resource label value, the value of its newest point."""
        newest: dict[str, tuple[float, float]] = {}
        for one in series:
            name = one.get("resource", {}).get("labels", {}).get(label, "")
            for at, value in _points(one, 0.0):
                if name not in newest or at > newest[name][0]:
                    newest[name] = (at, value)
        return {name: value for name, (_, value) in newest.items()}

    def _series(
        self,
        filter_: str,
        since: float,
        until: float,
        *,
        aligner: str,
        reducer: str,
        group_by: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        params: dict[str, str | list[str]] = {
            "filter": filter_,
            "interval.startTime": _rfc3339(since),
            "interval.endTime": _rfc3339(until),
            "aggregation.alignmentPeriod": f"{self.period}s",
            "aggregation.perSeriesAligner": aligner,
            "aggregation.crossSeriesReducer": reducer,
        }
        if group_by:
            params["aggregation.groupByFields"] = list(group_by)
        found: list[dict[str, Any]] = []
        url = f"{MONITORING}/projects/{self.project}/timeSeries"
        while True:
            answer = self.client.get(url, params=params)
            answer.raise_for_status()
            body = answer.json()
            found.extend(body.get("timeSeries", []))
            if not body.get("nextPageToken"):
                return found
            params["pageToken"] = body["nextPageToken"]


class CloudMonitoringMetrics(CloudMonitoring, RevisionMetrics):
    def __init__(
        self, project: str, region: str, client: httpx.Client, period_seconds: int = 60
    ) -> None:
        super().__init__(project, client, period_seconds)
        self.region = region

    @classmethod
    def from_default_credentials(cls, project: str, region: str) -> CloudMonitoringMetrics:
        """With Application Default Credentials, refreshed before each request's token expires."""
        return cls(project, region, authorised_client())

    def revision_of(self, service: str, tag: str) -> str:
        """The revision of ``service`` its traffic tag ``tag`` points at."""
        url = f"{RUN}/projects/{self.project}/locations/{self.region}/services/{service}"
        answer = self.client.get(url)
        answer.raise_for_status()
        for target in answer.json().get("trafficStatuses", []):
            if target.get("tag") == tag:
                return str(target["revision"])
        raise LookupError(f"no revision of {service} is tagged {tag!r}")

    def samples(self, service: str, tag: str, since: float, until: float) -> list[Sample]:
        revision = self.revision_of(service, tag)
        where = (
            f'resource.type = "cloud_run_revision" AND resource.labels.service_name = "{service}"'
            f' AND resource.labels.revision_name = "{revision}"'
        )
        counts = self._series(
            f'{where} AND metric.type = "run.googleapis.com/request_count"',
            since,
            until,
            aligner="ALIGN_DELTA",
            reducer="REDUCE_SUM",
            group_by=("metric.labels.response_code_class",),
        )
        latencies = self._series(
            f'{where} AND metric.type = "run.googleapis.com/request_latencies"',
            since,
            until,
            aligner="ALIGN_PERCENTILE_99",
            reducer="REDUCE_MAX",
        )
        requests: dict[float, int] = {}
        errors: dict[float, int] = {}
        for series in counts:
            code_class = series.get("metric", {}).get("labels", {}).get("response_code_class", "")
            for at, value in _points(series, since):
                requests[at] = requests.get(at, 0) + int(value)
                if code_class == "5xx":
                    errors[at] = errors.get(at, 0) + int(value)
        p99 = {at: float(value) for series in latencies for at, value in _points(series, since)}
        return [
            Sample(
                at=at, requests=requests.get(at, 0), errors=errors.get(at, 0), p99_ms=p99.get(at)
            )
            for at in sorted(set(requests) | set(p99))
        ]


def _one_of(values: Sequence[str]) -> str:
    return "one_of(" + ", ".join(f'"{v}"' for v in values) + ")"


def _points(series: dict[str, Any], since: float) -> list[tuple[float, float]]:
    out = []
    for point in series.get("points", []):
        end = datetime.fromisoformat(point["interval"]["endTime"].replace("Z", "+00:00"))
        value = point["value"]
        number = value.get("int64Value", value.get("doubleValue", 0))
        out.append((end.timestamp() - since, float(number)))
    return out


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")
