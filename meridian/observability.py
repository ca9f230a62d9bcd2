"""Logs, traces and trace-context propagation, the same in every service.

Logs are JSON lines on stdout with ``severity``, ``message`` and the trace field Cloud Logging
reads (``logging.googleapis.com/trace``), so a request's log lines and its spans line up. Trace
context crosses Pub/Sub as the W3C ``traceparent`` message attribute. Spans go where
``Settings.observability.trace_export`` says: Cloud Trace on the gcp backend (batched, through
``opentelemetry-exporter-gcp-trace``), the console when asked, nowhere by default locally.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from meridian.config import Settings

_PROPAGATOR = TraceContextTextMapPropagator()
_SEVERITY = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "exception": "ERROR",
}


class _GoogleFields:
    """The structlog processor that adds the fields Cloud Logging reads; the project in trace
    names is ``Settings.project``, taken once when logging is configured."""

    def __init__(self, project: str) -> None:
        self.traces = f"projects/{project}/traces/"

    def __call__(
        self, _: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event["severity"] = _SEVERITY.get(method, method.upper())
        event["message"] = event.pop("event", "")
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            event["logging.googleapis.com/trace"] = f"{self.traces}{span.trace_id:032x}"
            event["logging.googleapis.com/spanId"] = f"{span.span_id:016x}"
        return event


class _StdoutLogger:
    """Writes each line to whatever ``sys.stdout`` is at that moment (a logger bound to the
    stream at creation outlives a replaced or closed stream, as under test capture)."""

    def __init__(self, *_: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stdout, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(service: str, settings: Settings = Settings()) -> None:
    """JSON logs on stdout for ``service``, from structlog and from the standard library alike
    (uvicorn, OpenTelemetry, …), at ``settings.observability.log_level`` (MERIDIAN_LOG_LEVEL)."""
    level_name = settings.observability.log_level.upper()
    google_fields = _GoogleFields(settings.project)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.TimeStamper(fmt="iso", key="time"),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, google_fields, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=_StdoutLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                google_fields,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level_name)
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


class RecordWhenExported(Sampler):
    """Records spans only once an exporter is installed, then samples ``ratio`` of new traces
    (and follows the caller's decision for continued ones).

    Until then every span is a non-recording one: it still has a trace id and a span id, so logs
    carry the trace field and messages carry ``traceparent``, but nothing pays for attributes,
    events and end times that no exporter would ever read (recording them cost the command
    service about a fifth of the CPU of each ``:deliver``).
    """

    def __init__(self, ratio: float = 1.0) -> None:
        self.exporting = False
        self._sampled = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if self.exporting:
            return self._sampled.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        parent = trace.get_current_span(parent_context).get_span_context()
        return SamplingResult(Decision.DROP, None, parent.trace_state if parent.is_valid else None)

    def get_description(self) -> str:
        return f"RecordWhenExported({self._sampled.get_description()})"


def configure_tracing(
    service: str, exporter: SpanExporter | None = None, settings: Settings = Settings()
) -> TracerProvider:
    """Install an OpenTelemetry tracer provider for ``service``.

    Spans are exported to ``exporter`` if given, else where ``span_processor(settings)`` sends
    them (MERIDIAN_TRACE_EXPORT), sampling ``trace_sample_ratio`` of new traces
    (MERIDIAN_TRACE_SAMPLE_RATIO, default all); with no exporter they are not recorded, though
    trace context still propagates.
    """
    options = settings.observability
    processor = span_processor(settings) if exporter is None else SimpleSpanProcessor(exporter)
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # OpenTelemetry lets the global be set only once
        provider = TracerProvider(
            sampler=RecordWhenExported(options.trace_sample_ratio),
            resource=Resource.create({"service.name": service}),
        )
        trace.set_tracer_provider(provider)
    if processor is not None:
        provider.add_span_processor(processor)
        if isinstance(provider.sampler, RecordWhenExported):
            provider.sampler.exporting = True
    return provider


def span_processor(settings: Settings) -> SpanProcessor | None:
    """How spans leave the process for ``settings.observability.trace_export``: to Cloud Trace
    in batches sent by a background thread (a request never waits on Google; what is still
    queued is flushed when the provider shuts down at exit), to stderr one by one, or nowhere.

    The Cloud Trace client takes the project from ``settings.project`` and its credentials from
    the environment (Cloud Run's service account); without any, the service fails to start
    rather than drop every span.
    """
    export = settings.observability.trace_export
    if export == "cloud-trace":
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        return BatchSpanProcessor(CloudTraceSpanExporter(project_id=settings.project))
    if export == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    return None


def inject_traceparent(attributes: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current span's W3C ``traceparent`` into message attributes (if a span is active)."""
    traceparent = current_traceparent()
    if traceparent:
        attributes["traceparent"] = traceparent
    return attributes


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def extract_context(attributes: Mapping[str, str]) -> otel_context.Context:
    """The trace context carried by a message's ``traceparent`` attribute (empty if none or
    malformed), to be used as the parent of the consumer's span."""
    return _PROPAGATOR.extract(dict(attributes))
