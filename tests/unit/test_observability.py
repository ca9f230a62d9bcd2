"""JSON logs with the fields Cloud Logging reads, and W3C trace context through message attributes."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meridian import observability
from meridian.config import ConfigError, Settings
from meridian.observability import (
    RecordWhenExported,
    configure_logging,
    configure_tracing,
    extract_context,
    get_logger,
    inject_traceparent,
)


def test_logs_are_json_with_severity_message_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("billing")
    tracer = configure_tracing("billing").get_tracer("test")
    with tracer.start_as_current_span("charge") as span:
        get_logger("test").warning("charge retried", parcel_id="p-1")
        context = span.get_span_context()
    get_logger("test").info("outside any span")
    first, second = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert first["severity"] == "WARNING"
    assert first["message"] == "charge retried"
    assert first["parcel_id"] == "p-1"
    assert first["service"] == "billing"
    assert first["logging.googleapis.com/trace"].endswith(f"/traces/{context.trace_id:032x}")
    assert first["logging.googleapis.com/spanId"] == f"{context.span_id:016x}"
    assert second["severity"] == "INFO"
    assert "logging.googleapis.com/trace" not in second


def test_a_consumer_span_continues_the_producer_trace() -> None:
    exporter = InMemorySpanExporter()
    tracer = configure_tracing("test", exporter).get_tracer("test")
    with tracer.start_as_current_span("publish"):
        attributes = inject_traceparent({"eventType": "ParcelDelivered"})
    assert attributes["traceparent"].startswith("00-")
    with tracer.start_as_current_span("consume", context=extract_context(attributes)):
        pass
    publish, consume = exporter.get_finished_spans()
    assert consume.context.trace_id == publish.context.trace_id
    assert consume.parent is not None and consume.parent.span_id == publish.context.span_id


def test_no_span_means_no_traceparent_and_garbage_is_ignored() -> None:
    configure_tracing("test")
    assert inject_traceparent({}) == {}
    context = extract_context({"traceparent": "not-a-traceparent"})
    assert not trace.get_current_span(context).get_span_context().is_valid


def test_spans_are_recorded_only_once_something_exports_them() -> None:
    sampler = RecordWhenExported()
    tracer = TracerProvider(sampler=sampler).get_tracer("test")
    with tracer.start_as_current_span("deliver") as span:
        attributes = inject_traceparent({})
    assert not span.is_recording()
    assert span.get_span_context().is_valid  # logs and messages still carry the trace
    assert not _sampled(attributes["traceparent"])  # downstream will not record it either
    sampler.exporting = True
    with tracer.start_as_current_span("deliver") as span:
        assert span.is_recording()
        assert _sampled(inject_traceparent({})["traceparent"])


def _sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


# Where spans go (MERIDIAN_TRACE_EXPORT) ----------------------------------------------------------


# The exporter is marked deprecated in favour of OTLP to Google's telemetry endpoint, whose
# exporter is not among our dependencies; it is still the supported Cloud Trace exporter.
@pytest.mark.filterwarnings("ignore:CloudTraceSpanExporter is deprecated:DeprecationWarning")
def test_the_gcp_backend_exports_spans_to_cloud_trace_in_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Credentials as Cloud Run's metadata server would give them, without the network: building
    # the client reads them and nothing is sent until a batch of spans is exported.
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    monkeypatch.setattr(google.auth, "default", lambda *_, **__: (AnonymousCredentials(), None))
    settings = Settings.from_env(
        {"MERIDIAN_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": "meridian-prod"}
    )

    processor = observability.span_processor(settings)

    assert settings.observability.trace_export == "cloud-trace"
    assert isinstance(processor, BatchSpanProcessor)
    exporter = processor._batch_processor._exporter
    assert isinstance(exporter, CloudTraceSpanExporter)
    assert exporter.project_id == "meridian-prod"
    processor.shutdown()

    provider = TracerProvider(sampler=RecordWhenExported())
    provider.add_span_processor(processor)
    assert provider._active_span_processor._span_processors == (processor,)


def test_locally_spans_go_to_the_console_only_when_asked() -> None:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    assert Settings.from_env({}).observability.trace_export == ""
    assert observability.span_processor(Settings.from_env({})) is None
    assert (
        observability.span_processor(Settings.from_env({"MERIDIAN_TRACE_EXPORT": "none"})) is None
    )
    console = observability.span_processor(Settings.from_env({"MERIDIAN_TRACE_EXPORT": "console"}))
    assert isinstance(console, SimpleSpanProcessor)
    assert isinstance(console.span_exporter, ConsoleSpanExporter)


def test_the_gcp_backend_can_switch_export_off_or_to_the_console() -> None:
    for value, expected in (("none", "none"), ("", ""), ("console", "console")):
        settings = Settings.from_env({"MERIDIAN_BACKEND": "gcp", "MERIDIAN_TRACE_EXPORT": value})
        assert settings.observability.trace_export == expected


def test_an_unknown_trace_export_names_the_variable_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"MERIDIAN_TRACE_EXPORT must be one of .*'cloud-trace'"):
        Settings.from_env({"MERIDIAN_TRACE_EXPORT": "otlp"})
