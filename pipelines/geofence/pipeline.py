"""Options, assembly and running of the geofence job (``python -m pipelines.geofence``).

Every option also reads an environment variable (named in its help), so ``meridian up`` and the
Flex Template launcher configure the job the same way; ``--help`` lists them. The adapters the
job reads and writes with are built by ``bootstrap.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from pipelines.geofence import source as sources
from pipelines.geofence.bootstrap import JobAdapters, bootstrap
from pipelines.geofence.fence_feed import fence_snapshots
from pipelines.geofence.loaders import CombinedFences, FenceLoader, GeoJsonFences, StoreFences
from pipelines.geofence.tracking import TrackerConfig
from pipelines.geofence.transforms import (
    DEFAULT_SHARDS,
    Detect,
    DetectSettings,
    EncodeEvents,
    Publish,
    dead_letter_message,
)
from pipelines.geofence.validation import Limits

log = logging.getLogger("pipelines.geofence")


def _env(name: str, default: Any) -> Any:
    return os.environ.get(name, default)


class GeofenceOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        add = parser.add_argument
        add(
            "--backend",
            default=_env("MERIDIAN_BACKEND", "embedded"),
            choices=["embedded", "gcp"],
            help="embedded: broker, store and warehouse in --data_dir; gcp: Pub/Sub and Firestore (MERIDIAN_BACKEND)",
        )
        add(
            "--data_dir",
            default=_env("MERIDIAN_DATA_DIR", ".meridian"),
            help="embedded runtime's data directory (MERIDIAN_DATA_DIR)",
        )
        add(
            "--subscription",
            default=_env("GEOFENCE_SUBSCRIPTION", "geofence"),
            help="telemetry subscription; a short name or projects/P/subscriptions/S (GEOFENCE_SUBSCRIPTION)",
        )
        add(
            "--output_topic",
            default=_env("GEOFENCE_OUTPUT_TOPIC", "logistics.events"),
            help="(GEOFENCE_OUTPUT_TOPIC)",
        )
        add(
            "--dead_letter_topic",
            default=_env("GEOFENCE_DEAD_LETTER_TOPIC", "geofence.dlq"),
            help="(GEOFENCE_DEAD_LETTER_TOPIC)",
        )
        add(
            "--fences_file",
            default=_env("GEOFENCE_FENCES_FILE", ""),
            help="GeoJSON FeatureCollection of extra fences (GEOFENCE_FENCES_FILE)",
        )
        add(
            "--fences_from_store",
            default=_env("GEOFENCE_FENCES_FROM_STORE", "true"),
            help="read the geofences collection: true/false (GEOFENCE_FENCES_FROM_STORE)",
        )
        add(
            "--margin_m",
            type=float,
            default=float(_env("GEOFENCE_MARGIN_M", 15)),
            help="default hysteresis margin (GEOFENCE_MARGIN_M)",
        )
        add(
            "--confirm_pings",
            type=int,
            default=int(_env("GEOFENCE_CONFIRM_PINGS", 2)),
            help="(GEOFENCE_CONFIRM_PINGS)",
        )
        add(
            "--confirm_seconds",
            type=float,
            default=float(_env("GEOFENCE_CONFIRM_SECONDS", 10)),
            help="(GEOFENCE_CONFIRM_SECONDS)",
        )
        add(
            "--idle_radius_m",
            type=float,
            default=float(_env("GEOFENCE_IDLE_RADIUS_M", 30)),
            help="(GEOFENCE_IDLE_RADIUS_M)",
        )
        add(
            "--idle_minutes",
            type=float,
            default=float(_env("GEOFENCE_IDLE_MINUTES", 5)),
            help="(GEOFENCE_IDLE_MINUTES)",
        )
        add(
            "--max_speed_mps",
            type=float,
            default=float(_env("GEOFENCE_MAX_SPEED_MPS", 70)),
            help="(GEOFENCE_MAX_SPEED_MPS)",
        )
        add(
            "--max_future_s",
            type=float,
            default=float(_env("GEOFENCE_MAX_FUTURE_S", 120)),
            help="(GEOFENCE_MAX_FUTURE_S)",
        )
        add(
            "--allowed_lateness_s",
            type=float,
            default=float(_env("GEOFENCE_ALLOWED_LATENESS_S", 10)),
            help="how far out of order pings may arrive and still be applied in order (GEOFENCE_ALLOWED_LATENESS_S)",
        )
        add(
            "--fence_refresh_s",
            type=float,
            default=float(_env("GEOFENCE_FENCE_REFRESH_S", 10)),
            help="how often the fences are reloaded, in seconds (GEOFENCE_FENCE_REFRESH_S)",
        )
        add(
            "--shards",
            type=int,
            default=int(_env("GEOFENCE_SHARDS", DEFAULT_SHARDS)),
            help="keys the per-vehicle state is spread over; more for more workers (GEOFENCE_SHARDS)",
        )
        add(
            "--max_batch",
            type=int,
            default=int(_env("GEOFENCE_MAX_BATCH", 20000)),
            help="local source pull batch (GEOFENCE_MAX_BATCH)",
        )
        add(
            "--stop_when_idle_s",
            type=float,
            default=_float_or_none(_env("GEOFENCE_STOP_WHEN_IDLE_S", "")),
            help="local source: finish after the subscription is empty this long (GEOFENCE_STOP_WHEN_IDLE_S)",
        )
        add(
            "--timestamp_attribute",
            default=_env("GEOFENCE_TIMESTAMP_ATTRIBUTE", "") or None,
            help="Dataflow: attribute with the ping time, for Pub/Sub's event-time watermark "
            "(GEOFENCE_TIMESTAMP_ATTRIBUTE)",
        )
        add(
            "--archive_start",
            default=_env("GEOFENCE_ARCHIVE_START", ""),
            help="batch mode: ISO start of the replayed range",
        )
        add(
            "--archive_end",
            default=_env("GEOFENCE_ARCHIVE_END", ""),
            help="batch mode: ISO end of the replayed range",
        )


def _float_or_none(value: str) -> float | None:
    return float(value) if value not in ("", None) else None


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def settings_from(opts: GeofenceOptions) -> DetectSettings:
    return DetectSettings(
        limits=Limits(max_speed_mps=opts.max_speed_mps, max_future_s=opts.max_future_s),
        tracker=TrackerConfig(
            confirm_pings=opts.confirm_pings,
            confirm_seconds=opts.confirm_seconds,
            idle_radius_m=opts.idle_radius_m,
            idle_after_s=opts.idle_minutes * 60,
            max_speed_mps=opts.max_speed_mps,
        ),
        shards=opts.shards,
    )


def fence_loader(opts: GeofenceOptions, job: JobAdapters) -> FenceLoader:
    loaders: list[FenceLoader] = []
    if str(opts.fences_from_store).lower() in ("1", "true", "yes"):
        loaders.append(StoreFences(job.fence_store, opts.margin_m))
    if opts.fences_file:
        loaders.append(GeoJsonFences(opts.fences_file, opts.margin_m))
    return CombinedFences(loaders)


def is_direct(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    return runner in (None, "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def read_pings(p: beam.Pipeline, options: PipelineOptions, job: JobAdapters) -> beam.PCollection:
    """The one place the source is chosen: archive (batch), our broker source (local streaming)
    or ReadFromPubSub (Dataflow). Everything downstream is identical."""
    opts = options.view_as(GeofenceOptions)
    project = _project(options)
    if opts.archive_start or not options.view_as(StandardOptions).streaming:
        end = _epoch(opts.archive_end) if opts.archive_end else datetime.now().timestamp()
        start = _epoch(opts.archive_start) if opts.archive_start else end - 86_400
        return sources.read_archive(p, job.archive, start, end, None)
    if is_direct(options) and opts.backend == "embedded":
        return p | "ReadFromEmbeddedBroker" >> sources.ReadFromEmbeddedBroker(
            sources.BrokerSourceSettings(
                open_broker=job.telemetry_broker,
                subscription=opts.subscription.rsplit("/", 1)[-1],
                max_batch=opts.max_batch,
                allowed_lateness_s=opts.allowed_lateness_s,
                stop_when_idle_s=opts.stop_when_idle_s,
            )
        )
    path = (
        opts.subscription
        if "/" in opts.subscription
        else f"projects/{project}/subscriptions/{opts.subscription}"
    )
    return sources.read_from_pubsub(p, path, opts.timestamp_attribute, None)


def _project(options: PipelineOptions) -> str:
    return str(options.view_as(GoogleCloudOptions).project or "meridian-local")


def build(p: beam.Pipeline, options: PipelineOptions) -> None:
    opts = options.view_as(GeofenceOptions)
    job = bootstrap(opts.backend, opts.data_dir, _project(options))
    fences = fence_snapshots(
        p,
        fence_loader(opts, job),
        opts.fence_refresh_s,
        streaming=bool(options.view_as(StandardOptions).streaming),
        direct=is_direct(options),
    )
    events, dead = read_pings(p, options, job) | "Detect" >> Detect(settings_from(opts), fences)
    (
        events
        | "Encode" >> beam.ParDo(EncodeEvents())
        | "PublishEvents" >> beam.ParDo(Publish(job.publisher, opts.output_topic))
    )
    (
        dead
        | "DeadLetterMessages" >> beam.Map(dead_letter_message)
        | "PublishDeadLetters" >> beam.ParDo(Publish(job.publisher, opts.dead_letter_topic))
    )


def local_runner(options: PipelineOptions) -> Any:
    """The runner for ``--runner DirectRunner``, chosen here rather than by Beam: Beam's switching
    DirectRunner would try to download the Prism runner binary (no network locally), and only the
    bundle-based DirectRunner runs our broker source in streaming."""
    if options.view_as(StandardOptions).streaming:
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        return BundleBasedDirectRunner()
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


def help_parser() -> argparse.ArgumentParser:
    """The job's own options, for ``--help`` (Beam's options parser prints none of them)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.geofence",
        description="Geofence and idle detection over the telemetry firehose (Apache Beam).",
        epilog="Beam's own options are accepted too: --streaming, --runner (DirectRunner by "
        "default; DataflowRunner), --project, --region, --temp_location, ... (see "
        "apache_beam.options.pipeline_options). README.md beside this module has examples.",
    )
    GeofenceOptions._add_argparse_args(parser)
    return parser


def launch_args(argv: Sequence[str]) -> list[str]:
    """Beam's arguments from a launcher's: Dataflow launches a Flex Template with each of its
    parameters as ``--name=value``, while Beam's ``--streaming`` is a flag that refuses a value,
    so ``--streaming=true`` becomes ``--streaming`` and ``--streaming=false`` is dropped."""
    args = []
    for arg in argv:
        name, has_value, value = arg.partition("=")
        if name == "--streaming" and has_value:
            if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise SystemExit(f"--streaming takes true or false, not {value!r}")
            if value.strip().lower() in ("true", "1", "yes"):
                args.append("--streaming")
            continue
        args.append(arg)
    return args


def run(argv: Sequence[str] | None = None) -> Any:
    args = launch_args(argv if argv is not None else sys.argv[1:])
    if "-h" in args or "--help" in args:
        help_parser().print_help()
        return None
    options = PipelineOptions(args)
    opts = options.view_as(GeofenceOptions)
    if opts.archive_start:
        options.view_as(StandardOptions).streaming = False
    runner = local_runner(options) if is_direct(options) else None
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline, options)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("MERIDIAN_LOG_LEVEL", "INFO").upper(),
        stream=sys.stdout,
        format='{"severity": "%(levelname)s", "logger": "%(name)s", "message": "%(message)s"}',
    )
    run()
