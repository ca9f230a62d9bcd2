"""Crash faults across processes on one data directory: kill -9 of a consumer mid-batch and of a
publisher mid-publish lose nothing acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from meridian.embedded.pubsub import Broker, SubscriptionConfig
from meridian.ports import Message

ROOT = Path(__file__).resolve().parents[2]

CONSUMER = textwrap.dedent(
    """
    import sys, time
    from meridian.embedded.pubsub import Broker
    broker = Broker(sys.argv[1])
    for _ in range(3):
        batch = broker.pull("work", 100)
        broker.acknowledge("work", [m.ack_id for m in batch])
        print("ACKED", " ".join(m.message_id for m in batch), flush=True)
    held = broker.pull("work", 100)  # leased, never acked: the process dies holding them
    print("HOLDING", len(held), flush=True)
    time.sleep(600)
    """
)

PUBLISHER = textwrap.dedent(
    """
    import sys
    from meridian.embedded.pubsub import Broker
    from meridian.ports import Message
    broker = Broker(sys.argv[1])
    while True:
        ids = broker.publish("work", [Message(b"x" * 64) for _ in range(100)])
        print(" ".join(ids), flush=True)
    """
)


def _spawn(script: str, data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_consumer_killed_mid_batch_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("work")
    broker.create_subscription(SubscriptionConfig("work", "work", ack_deadline_s=10))
    published = set()
    for _ in range(5):
        published |= set(broker.publish("work", [Message(b"job") for _ in range(100)]))

    consumer = _spawn(CONSUMER, tmp_path)
    assert consumer.stdout is not None
    acked: set[str] = set()
    for line in consumer.stdout:
        word, _, rest = line.strip().partition(" ")
        if word == "ACKED":
            acked |= set(rest.split())
        if word == "HOLDING":
            assert int(rest) == 100
            break
    consumer.send_signal(signal.SIGKILL)
    consumer.wait()

    # The restarted consumer (another process view, its clock past the dead one's deadline).
    restarted = Broker(tmp_path, clock=lambda: time.time() + 60)
    while batch := restarted.pull("work", 100):
        restarted.acknowledge("work", [m.ack_id for m in batch])
        acked |= {m.message_id for m in batch}
    assert acked == published
    assert restarted.metrics("work").backlog == 0


def test_publisher_killed_mid_publish_loses_no_acknowledged_message(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("work")
    broker.create_subscription(SubscriptionConfig("work", "work"))
    publisher = _spawn(PUBLISHER, tmp_path)
    assert publisher.stdout is not None
    confirmed: set[str] = set()
    for line in publisher.stdout:
        confirmed |= set(line.split())
        if len(confirmed) >= 2000:
            break
    publisher.send_signal(signal.SIGKILL)
    publisher.wait()
    stored = set()
    while batch := broker.pull("work", 1000):
        broker.acknowledge("work", [m.ack_id for m in batch])
        stored |= {m.message_id for m in batch}
    assert confirmed <= stored
