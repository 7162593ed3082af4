"""Delivery failures (reported by position, or by topic, key and value) are set on the
messages they name."""

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
        [(("d", b"b", b"2"), boom), (("d", b"a", b"1"), boom)],
    )
    assert results[0] is boom
    assert [r is boom for r in results[1:3]].count(True) == 1  # one of the two identical
    assert results[3] is refused  # refused at produce time: kept


def test_no_failures_leaves_every_message_delivered() -> None:
    outputs = [Outgoing("d", b"a", b"1", [])]
    assert match_failures(outputs, [None], []) == [None]


def test_messages_with_headers_are_named_by_their_position() -> None:
    """Two dead letters of the same bytes differ only in their headers, which librdkafka's
    reports do not carry: the failure of the second names its position."""
    first = Outgoing("dlq", b"k", b"{", [("source_offset", b"10")])
    second = Outgoing("dlq", b"k", b"{", [("source_offset", b"11")])
    plain = Outgoing("dlq", b"k", b"{", [])
    failed = RuntimeError("timed out")
    results = match_failures([first, second, plain], [None, None, None], [(1, failed)])
    assert results == [None, failed, None]
    # a report by identity names only a message without headers
    results = match_failures([first, plain], [None, None], [(("dlq", b"k", b"{"), failed)])
    assert results == [None, failed]
