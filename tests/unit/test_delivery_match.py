"""Delivery failures (reported by topic, key, value and headers) are set on the messages they
name."""

from __future__ import annotations

import pytest

from streaming.delivery import match_failures
from streaming.worker import Outgoing

pytestmark = pytest.mark.unit


def test_each_failure_lands_on_one_message_it_names_and_the_rest_stay_delivered() -> None:
    outputs = [
        Outgoing("d", b"a", b"1", []),
        Outgoing("d", b"b", b"2", []),
        Outgoing("d", b"b", b"2", []),  # identical to the one before
        Outgoing("q", b"a", b"1", []),  # same key and value, other topic
    ]
    refused = ValueError("too large")
    boom = RuntimeError("timed out")
    results = match_failures(
        outputs,
        [None, None, None, refused],
        [(("d", b"b", b"2", ()), boom), (("d", b"a", b"1", ()), boom)],
    )
    assert results[0] is boom
    assert [r is boom for r in results[1:3]].count(True) == 1  # one of the two identical
    assert results[3] is refused  # refused at produce time: kept


def test_no_failures_leaves_every_message_delivered() -> None:
    outputs = [Outgoing("d", b"a", b"1", [])]
    assert match_failures(outputs, [None], []) == [None]


def test_messages_of_the_same_bytes_are_told_apart_by_their_headers() -> None:
    """Two dead letters of the same malformed payload differ only in their source offset:
    the failure reported for the second is the second's, which is the one re-sent."""
    first = Outgoing("dlq", b"k", b"{", [("source_offset", b"10")])
    second = Outgoing("dlq", b"k", b"{", [("source_offset", b"11")])
    failed = RuntimeError("timed out")
    results = match_failures(
        [first, second], [None, None], [(("dlq", b"k", b"{", (("source_offset", b"11"),)), failed)]
    )
    assert results == [None, failed]
