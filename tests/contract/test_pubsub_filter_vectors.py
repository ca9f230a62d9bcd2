"""Reference §1.3 filter test vectors, evaluated by the broker at fan-out (embedded) and through
the gRPC front end (INVALID_ARGUMENT for the rejected filters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian.domain.errors import ValidationError
from meridian.embedded.pubsub import Broker, SubscriptionConfig
from meridian.ports import Message

ATTRIBUTE_SETS = [{}, {"domain": "com"}, {"domain": "co.uk"}, {"lang": "en"}]
VECTORS = [
    ("attributes:domain", [False, True, True, False]),
    ('attributes.domain = "com"', [False, True, False, False]),
    ('attributes.domain != "com"', [True, False, True, True]),
    ('hasPrefix(attributes.domain, "co")', [False, True, True, False]),
    ("NOT attributes:domain", [True, False, False, True]),
    ("-attributes:domain", [True, False, False, True]),
    (
        'attributes:domain AND (attributes.lang = "en" OR attributes.lang = "fr")',
        [False, False, False, False],
    ),
]
REJECTED = [
    'attributes:domain AND attributes.lang = "en" OR attributes:x',
    'attributes.domain = "com" and attributes:lang',
    "attributes:" + "k" * 260,
]


@pytest.mark.parametrize(("text", "expected"), VECTORS)
def test_filter_vector_through_the_broker(tmp_path: Path, text: str, expected: list[bool]) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("t")
    broker.create_subscription(SubscriptionConfig("s", "t", filter=text))
    broker.publish("t", [Message(str(i).encode(), a) for i, a in enumerate(ATTRIBUTE_SETS)])
    delivered = {int(m.message.data) for m in broker.pull("s", 10)}
    assert [i in delivered for i in range(len(ATTRIBUTE_SETS))] == expected
    # Filtered-out messages are auto-acked: not in the backlog, not counted.
    assert broker.metrics("s").backlog == sum(expected)


@pytest.mark.parametrize("text", REJECTED)
def test_rejected_filter_vector(tmp_path: Path, text: str) -> None:
    broker = Broker(tmp_path)
    broker.create_topic("t")
    with pytest.raises(ValidationError, match="invalid filter"):
        broker.create_subscription(SubscriptionConfig("s", "t", filter=text))


def test_rejected_filter_is_invalid_argument_over_grpc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    from meridian.embedded.pubsub.grpc_server import serve

    broker = Broker(tmp_path, project="p")
    broker.create_topic("t")
    server, port = serve(broker, "127.0.0.1", 0, workers=4)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    client = pubsub_v1.SubscriberClient()
    try:
        with pytest.raises(exceptions.InvalidArgument, match=r"AND and OR|parenthes"):
            client.create_subscription(
                request={
                    "name": "projects/p/subscriptions/s",
                    "topic": "projects/p/topics/t",
                    "filter": REJECTED[0],
                }
            )
        with pytest.raises(exceptions.NotFound):
            client.get_subscription(subscription="projects/p/subscriptions/missing")
    finally:
        client.close()
        server.stop(grace=None)
