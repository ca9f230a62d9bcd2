"""BigQuery subscriptions: each message becomes one warehouse row (reference §4).

Columns: ``data`` (bytes) always; with ``write_metadata`` also ``subscription_name``,
``message_id``, ``publish_time`` and ``attributes`` (a JSON object string). Delivery stays
at-least-once, so a crash between the write and the ack can leave a duplicate row: readers
dedupe on ``message_id`` as they would in BigQuery. A failed write nacks the batch, so the retry
and dead-letter policies apply as for any subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from meridian.embedded.pubsub.broker import Broker
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.ports import ReceivedMessage, Warehouse


def to_row(message: ReceivedMessage, config: SubscriptionConfig) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if config.bigquery_write_metadata:
        row["subscription_name"] = config.name
        row["message_id"] = message.message_id
        row["publish_time"] = message.publish_time
        row["attributes"] = json.dumps(dict(message.message.attributes), separators=(",", ":"))
    row["data"] = message.message.data
    return row


class BigQuerySink:
    """Drains every BigQuery subscription of the broker into the warehouse."""

    def __init__(self, broker: Broker, warehouse: Warehouse, batch: int = 1000) -> None:
        self._broker = broker
        self._warehouse = warehouse
        self._batch = batch
        self._stopping = asyncio.Event()

    def drain_once(self) -> int:
        """Write one batch of each BigQuery subscription; returns rows written."""
        written = 0
        for config in self._broker.list_subscriptions():
            if config.kind != "bigquery" or config.bigquery_table is None:
                continue
            messages = self._broker.pull(config.name, self._batch)
            if not messages:
                continue
            ack_ids = [m.ack_id for m in messages]
            try:
                self._warehouse.append_rows(
                    config.bigquery_table, [to_row(m, config) for m in messages]
                )
            except Exception:
                # Any write failure (disk, type clash) is the message's retry path, not a crash.
                self._broker.modify_ack_deadline(config.name, ack_ids, 0)
                continue
            self._broker.acknowledge(config.name, ack_ids)
            written += len(messages)
        return written

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, idle_s: float = 0.5) -> None:
        while not self._stopping.is_set():
            if await asyncio.to_thread(self.drain_once):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), idle_s)
