"""Ack ids of the embedded broker: ``<subscription id>.<message id>.<attempt>``, and nothing else."""

from __future__ import annotations

import pytest

from meridian.domain.errors import ValidationError
from meridian.embedded.pubsub.config import SubscriptionConfig
from meridian.embedded.pubsub.delivery import parse_ack_id
from meridian.embedded.pubsub.topology import Sub

SUB = Sub(id=3, topic_id=1, config=SubscriptionConfig(name="live-map", topic="t"), created=0.0)


def test_an_ack_id_names_its_message_and_attempt() -> None:
    assert parse_ack_id(SUB, "3.1234.2") == (1234, 2)


@pytest.mark.parametrize("ack_id", ["3.1234", "3.1234.2.9", "3.x.2", "", "3..2"])
def test_anything_else_is_not_an_ack_id(ack_id: str) -> None:
    with pytest.raises(ValidationError, match="invalid ack id"):
        parse_ack_id(SUB, ack_id)


def test_an_ack_id_of_another_subscription_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not belong"):
        parse_ack_id(SUB, "4.1234.2")
