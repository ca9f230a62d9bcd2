"""Where pings come from: one function picks the source, the rest of the job is the same.

- Dataflow (or any portable runner): ``ReadFromPubSub`` on the ``geofence`` subscription.
- Local streaming (the DirectRunner): ``ReadFromEmbeddedBroker``, ours, over the embedded broker.
- Batch (backfill/replay): a time range of raw pings from the warehouse archive.

Why our own local source, and how it is hosted. Beam's Python DirectRunner reads Pub/Sub 10
messages per bundle and acks them before they are processed (about 1,000 messages/s, at most
once). A splittable DoFn does not help there: the DirectRunner holds the output watermark of an
unfinished SDF at -infinity, so no event-time timer downstream would ever fire; a DoFn looping
after an Impulse never finishes its bundle, so nothing it outputs is ever committed. What the
DirectRunner does run as a live, watermark-holding root is a *root transform evaluator* (that is
how Beam itself runs its Pub/Sub read and TestStream there), so ``ReadFromEmbeddedBroker`` is a
primitive transform with its own evaluator (``direct_root.py`` says how, and holds every use of
the DirectRunner's internals). The adapters (the broker, the warehouse) come built from
``bootstrap.py``. Each evaluation:

1. acknowledges the batch pulled by the previous evaluation: by now the executor has committed
   that evaluation's output bundle, i.e. handed the pings on (a crash before this point means
   redelivery, and the stateful step drops the duplicates);
2. pulls up to ``max_batch`` messages (waiting briefly when there are none);
3. decodes them into one ``PingBatch`` stamped with the earliest ping time (the ping's own
   ``recorded_at``, never the arrival time);
4. reports a watermark hold of ``newest ping time - allowed lateness`` (bounded out-of-orderness),
   advanced to ``wall clock - allowed lateness`` when the subscription has been empty for the
   allowed lateness, so idle timers still fire when the fleet goes quiet.

With ``stop_when_idle_s`` the source finishes (watermark to +infinity) once the subscription
has been empty that long, which drains and ends the pipeline: tests and benchmarks use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from meridian.catalog import load_catalog
from meridian.ports import Warehouse
from pipelines.geofence.direct_root import RootEvaluator, RunStates, UnboundedRoot, register_root
from pipelines.geofence.model import Ping, PingBatch
from pipelines.geofence.transforms import BatchPings
from pipelines.geofence.validation import PingDecoder, decode_archive_rows

ARCHIVE_TABLE = "telemetry.raw_pings"


@dataclass(frozen=True)
class BrokerSourceSettings:
    """``open_broker``: the embedded broker (built by ``bootstrap.JobAdapters``) to pull from."""

    open_broker: Callable[[], Any]
    subscription: str = "geofence"
    max_batch: int = 20_000
    pull_chunk: int = 5_000
    idle_wait_s: float = 0.2
    allowed_lateness_s: float = 10.0
    stop_when_idle_s: float | None = None
    catalog_path: str | None = None


class ReadFromEmbeddedBroker(UnboundedRoot):
    """A root transform: PingBatches from the embedded broker (DirectRunner only)."""

    def __init__(self, settings: BrokerSourceSettings) -> None:
        super().__init__()
        self.settings = settings


@dataclass
class _ReadState:
    """What one running source keeps between evaluations (evaluators are made per bundle)."""

    settings: BrokerSourceSettings
    broker: Any = None
    decoder: PingDecoder | None = None
    unacked: list[str] = field(default_factory=list)
    newest: float = float("-inf")
    watermark: float = float("-inf")
    last_message_at: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked_batches: int = 0  # for tests: how many batches were acknowledged so far

    def open(self) -> None:
        if self.broker is None:
            self.broker = self.settings.open_broker()
            self.decoder = PingDecoder(load_catalog(self.settings.catalog_path))


_STATES: RunStates[_ReadState] = RunStates(lambda transform: _ReadState(transform.settings))


def read_state(transform: ReadFromEmbeddedBroker) -> _ReadState:
    return _STATES.of(transform)


class _BrokerReadEvaluator(RootEvaluator):
    def evaluate(self) -> tuple[list[tuple[PingBatch, Timestamp]], Timestamp]:
        state = read_state(self.transform)
        settings = state.settings
        outputs = []
        with state.lock:
            state.open()
            broker = state.broker
            if state.unacked:  # the previous batch's outputs have been committed downstream
                broker.acknowledge(settings.subscription, state.unacked)
                state.unacked = []
                state.acked_batches += 1
            received = self._pull(state)
            if received:
                state.last_message_at = time.monotonic()
                state.unacked = [m.ack_id for m in received]
                assert state.decoder is not None
                batch = state.decoder.decode_batch(
                    (m.message.data, m.message.attributes) for m in received
                )
                stamp = min((p.ts for p in batch.pings), default=max(state.watermark, 0.0))
                state.newest = max([state.newest, *(p.ts for p in batch.pings)])
                outputs.append((batch, Timestamp.of(stamp)))
            quiet_for = time.monotonic() - state.last_message_at
            lateness = settings.allowed_lateness_s
            state.watermark = max(state.watermark, state.newest - lateness)
            if not received and quiet_for >= lateness:
                state.watermark = max(state.watermark, time.time() - lateness)
            if (
                settings.stop_when_idle_s is not None
                and not received
                and quiet_for >= settings.stop_when_idle_s
            ):
                return outputs, MAX_TIMESTAMP
        return outputs, Timestamp.of(state.watermark) if state.watermark > 0 else Timestamp.of(0)

    @staticmethod
    def _pull(state: _ReadState) -> list[Any]:
        settings, broker = state.settings, state.broker
        received: list[Any] = []
        while len(received) < settings.max_batch:
            chunk = broker.pull(
                settings.subscription, min(settings.pull_chunk, settings.max_batch - len(received))
            )
            if not chunk:
                if received:
                    break
                broker.wait(settings.idle_wait_s)
                chunk = broker.pull(
                    settings.subscription, min(settings.pull_chunk, settings.max_batch)
                )
                if not chunk:
                    break
            received.extend(chunk)
        return received


register_root(ReadFromEmbeddedBroker, _BrokerReadEvaluator)


# Dataflow ----------------------------------------------------------------------------------------


class DecodePubsubMessage(beam.DoFn):
    """Pub/Sub messages → Pings stamped with their own time; undecodable ones as batch rejects."""

    def __init__(self, catalog_path: str | None = None) -> None:
        self._catalog_path = catalog_path

    def setup(self) -> None:
        self._decoder = PingDecoder(load_catalog(self._catalog_path))

    def process(self, message: Any) -> Iterator[Any]:
        result = self._decoder.decode(message.data, message.attributes or {})
        if isinstance(result, Ping):
            yield TimestampedValue(result, result.ts)
        else:
            yield PingBatch((), (result,))


def read_from_pubsub(
    p: beam.Pipeline,
    subscription_path: str,
    timestamp_attribute: str | None,
    catalog_path: str | None,
) -> beam.PCollection:
    from apache_beam.io.gcp.pubsub import ReadFromPubSub

    decoded = (
        p
        | "ReadFromPubSub"
        >> ReadFromPubSub(
            subscription=subscription_path,
            with_attributes=True,
            timestamp_attribute=timestamp_attribute,
        )
        | "Decode" >> beam.ParDo(DecodePubsubMessage(catalog_path))
    )
    pings = decoded | "OnlyPings" >> beam.Filter(lambda x: not isinstance(x, PingBatch))
    rejects = decoded | "OnlyRejects" >> beam.Filter(lambda x: isinstance(x, PingBatch))
    batches = pings | "BatchPings" >> beam.ParDo(BatchPings())
    return (batches, rejects) | "AllBatches" >> beam.Flatten()


# Batch: the warehouse archive --------------------------------------------------------------------


class ReadArchive(beam.DoFn):
    """One query of the archive for a time range; the pings whose own time falls in it."""

    def __init__(
        self,
        open_archive: Callable[[], Warehouse],
        start: float,
        end: float,
        chunk: int = 20_000,
        catalog_path: str | None = None,
    ) -> None:
        self._open_archive, self._start, self._end, self._chunk = open_archive, start, end, chunk
        self._catalog_path = catalog_path

    def process(self, _impulse: Any) -> Iterator[TimestampedValue]:
        warehouse = self._open_archive()
        # publish_time bounds prune partitions; a ping is published after it is recorded, and
        # phones buffer pings for a while, so the upper bound gets a day of slack.
        rows = warehouse.query(
            f"SELECT ANY_VALUE(data) AS data, ANY_VALUE(attributes) AS attributes FROM {ARCHIVE_TABLE} "
            "WHERE publish_time >= $start AND publish_time < $end GROUP BY message_id",
            {"start": _naive(self._start), "end": _naive(self._end + 86_400)},
        )
        decoder = PingDecoder(load_catalog(self._catalog_path))
        for i in range(0, len(rows), self._chunk):
            batch = decode_archive_rows(decoder, rows[i : i + self._chunk])
            pings = tuple(p for p in batch.pings if self._start <= p.ts < self._end)
            if pings or batch.rejected:
                stamp = min((p.ts for p in pings), default=self._start)
                yield TimestampedValue(PingBatch(pings, batch.rejected), stamp)


def read_archive(
    p: beam.Pipeline,
    open_archive: Callable[[], Warehouse],
    start: float,
    end: float,
    catalog_path: str | None,
) -> beam.PCollection:
    return (
        p
        | "Impulse" >> beam.Impulse()
        | "ReadArchive"
        >> beam.ParDo(ReadArchive(open_archive, start, end, catalog_path=catalog_path))
    )


def _naive(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)
