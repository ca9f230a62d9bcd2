"""Publish limits (reference §2.8): the quick pass over a batch must refuse exactly what the
detailed check refuses, with the detailed check's message, including for multi-byte text whose
UTF-8 size is larger than its length."""

from __future__ import annotations

import pytest

from meridian.domain.errors import LimitExceeded, ValidationError
from meridian.embedded.pubsub.publishing import _explain, check_limits
from meridian.ports import Message

ACCEPTED = [
    Message(b"x"),
    Message(b"", {"k": "v"}),
    Message(b"x", {"k" * 256: "v" * 1024}),
    Message(b"x", {"é" * 128: "é" * 512}),  # exactly 256 and 1,024 bytes
    Message(b"x", {f"k{i}": "v" for i in range(100)}),
    Message(b"x", ordering_key="o" * 1024),
    Message(b"x", ordering_key="é" * 512),
    Message(b"x" * 10_000_000),
]

REFUSED = [
    (Message(b""), ValidationError),
    (Message(b"x", {"": "v"}), ValidationError),
    (Message(b"x", {"googKey": "v"}), ValidationError),
    (Message(b"x", {"é" * 129: "v"}), LimitExceeded),  # 129 characters, 258 bytes
    (Message(b"x", {"k": "é" * 513}), LimitExceeded),
    (Message(b"x", {"k" * 257: "v"}), LimitExceeded),
    (Message(b"x", {"k": "v" * 1025}), LimitExceeded),
    (Message(b"x", {f"k{i}": "v" for i in range(101)}), LimitExceeded),
    (Message(b"x", ordering_key="é" * 513), LimitExceeded),
    (Message(b"x" * 10_000_001), LimitExceeded),
]


@pytest.mark.parametrize("message", ACCEPTED)
def test_messages_within_the_limits_pass(message: Message) -> None:
    check_limits([message])
    _explain([message])


@pytest.mark.parametrize(("message", "error"), REFUSED)
def test_each_limit_is_refused_with_the_detailed_message(
    message: Message, error: type[Exception]
) -> None:
    batch = [Message(b"fine", {"eventType": "VehiclePing"}), message]
    with pytest.raises(error) as quick:
        check_limits(batch)
    with pytest.raises(error) as detailed:
        _explain(batch)
    assert str(quick.value) == str(detailed.value)
    assert "message 1" in str(quick.value)


def test_the_request_size_counts_attributes_in_utf8_bytes() -> None:
    # 10 messages of 999,985 bytes plus attributes of 10 two-byte characters each: over 10 MB
    # only when the attributes are counted in bytes.
    batch = [Message(b"x" * 999_985, {"k": "é" * 10}) for _ in range(10)]
    with pytest.raises(LimitExceeded, match="10 MB"):
        check_limits(batch)
    check_limits([Message(b"x" * 999_985, {"k": "e" * 10}) for _ in range(10)])


def test_batch_size_limits() -> None:
    with pytest.raises(ValidationError):
        check_limits([])
    with pytest.raises(LimitExceeded, match="1000 messages per publish"):
        check_limits([Message(b"x")] * 1001)
