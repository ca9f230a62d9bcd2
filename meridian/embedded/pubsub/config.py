"""Topic and subscription settings, Pub/Sub's limits, and their validation (reference §2).

Settings are plain frozen dataclasses stored as JSON in the broker's database, so every process
on the data directory sees the same topology whatever created it (catalog, API or gRPC).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from meridian.domain.errors import FieldError, ValidationError
from meridian.filters import parse_filter

DEFAULT_RETENTION_S = 7 * 86400
MAX_RETENTION_S = 31 * 86400
MIN_RETENTION_S = 600
DEFAULT_ACK_DEADLINE_S = 10
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5

# Reference §2.8. Each is named in the LimitExceeded message so the caller knows which one bit.
MAX_DATA_BYTES = 10 * 1000 * 1000
MAX_REQUEST_BYTES = 10 * 1000 * 1000
MAX_MESSAGES_PER_PUBLISH = 1000
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_ORDERING_KEY_BYTES = 1024


@dataclass(frozen=True)
class TopicConfig:
    name: str
    message_retention_s: float = DEFAULT_RETENTION_S


@dataclass(frozen=True)
class RetryPolicy:
    minimum_backoff_s: float = 10.0
    maximum_backoff_s: float = 600.0

    def delay(self, failed_attempts: int) -> float:
        """Backoff before the next delivery after ``failed_attempts`` failures (reference §2.2
        [impl]): ``min(max, min * 2**(n-1))``. Google's exact curve is unpublished; no jitter is
        added so tests with an injected clock stay exact."""
        if failed_attempts <= 0:
            return 0.0
        return min(self.maximum_backoff_s, self.minimum_backoff_s * 2 ** (failed_attempts - 1))


@dataclass(frozen=True)
class SubscriptionConfig:
    """One subscription. ``push_endpoint`` makes it a push subscription, ``bigquery_table`` an
    export subscription into the warehouse; neither means pull."""

    name: str
    topic: str
    filter: str = ""
    ack_deadline_s: int = DEFAULT_ACK_DEADLINE_S
    message_retention_s: float = DEFAULT_RETENTION_S
    ordering: bool = False
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = DEFAULT_MAX_DELIVERY_ATTEMPTS
    retry: RetryPolicy | None = None
    push_endpoint: str | None = None
    push_service_account: str | None = None
    push_audience: str | None = None
    bigquery_table: str | None = None
    bigquery_write_metadata: bool = False

    @property
    def kind(self) -> str:
        if self.push_endpoint:
            return "push"
        if self.bigquery_table:
            return "bigquery"
        return "pull"

    def backoff(self, failed_attempts: int) -> float:
        return self.retry.delay(failed_attempts) if self.retry else 0.0

    def validated(self) -> SubscriptionConfig:
        """The config with Google's defaults applied (0 → default); raises ValidationError."""
        problems: list[str] = []
        deadline = self.ack_deadline_s or DEFAULT_ACK_DEADLINE_S
        if not 10 <= deadline <= 600:
            problems.append(f"ack_deadline_seconds must be 10-600, not {deadline}")
        retention = self.message_retention_s or DEFAULT_RETENTION_S
        if not MIN_RETENTION_S <= retention <= MAX_RETENTION_S:
            problems.append("message_retention_duration must be between 10 minutes and 31 days")
        attempts = self.max_delivery_attempts or DEFAULT_MAX_DELIVERY_ATTEMPTS
        if self.dead_letter_topic and not 5 <= attempts <= 100:
            problems.append(f"max_delivery_attempts must be 5-100, not {attempts}")
        if self.dead_letter_topic == self.topic:
            problems.append("dead_letter_topic must differ from the subscription's topic")
        if self.retry and not (
            0 <= self.retry.minimum_backoff_s <= self.retry.maximum_backoff_s <= 600
        ):
            problems.append("retry backoff must satisfy 0 <= minimum <= maximum <= 600 s")
        if self.push_endpoint and self.bigquery_table:
            problems.append("a subscription is push or BigQuery, not both")
        if problems:
            raise ValidationError(
                f"invalid subscription {self.name}", [FieldError("", p) for p in problems]
            )
        parse_filter(self.filter)  # FilterSyntaxError (a ValidationError) names the problem
        return replace(
            self,
            ack_deadline_s=deadline,
            message_retention_s=retention,
            max_delivery_attempts=attempts,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SubscriptionConfig:
        raw: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        if raw.get("retry") is not None:
            raw["retry"] = RetryPolicy(**raw["retry"])
        return cls(**raw)
