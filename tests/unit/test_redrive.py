"""Which dead letters ``fraudstream redrive`` sends back, and its command line (no Kafka:
the broker part is in ``tests/integration/test_redrive.py``)."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from fraudstream.cli import app, redrive_cmd
from fraudstream.consume import Record
from fraudstream.dead_letters import (
    ERROR_TYPES,
    INVALID_EVENT,
    REDRIVEN_FROM,
    SCORING_FAILED,
    WORKER_ERROR,
    redriven_from,
)
from fraudstream.redrive import (
    DEFAULT_GROUP,
    NO_VALUE,
    RECOVERABLE,
    TRUNCATED,
    RedriveResult,
    passed_over,
)
from fraudstream.schema import MAX_MESSAGE_BYTES
from streaming.worker import Incoming, dead_letter, decision_message

pytestmark = pytest.mark.unit

EVENT = b'{"transaction_id":"t","timestamp":"2026-11-21T10:00:00Z","customer_id":"c"}'


def _record(value: bytes | None, error_type: str | None, **headers: bytes) -> Record:
    found = [] if error_type is None else [("error_type", error_type.encode())]
    return Record("dlq", 0, 0, None, b"k", value, (*found, *headers.items()))


def _worker_dead_letter(value: bytes, error_type: str) -> Record:
    out = dead_letter(Incoming("tx", 1, 7, 1.0, b"k", value), "why", error_type, "dlq")
    return Record("dlq", 0, 0, None, out.key, out.value, tuple(out.headers))


@pytest.mark.parametrize("error_type", RECOVERABLE)
def test_recoverable_dead_letters_of_the_worker_are_sent(error_type: str) -> None:
    assert passed_over(_worker_dead_letter(EVENT, error_type), RECOVERABLE) is None


def test_invalid_events_are_passed_over_unless_chosen() -> None:
    record = _worker_dead_letter(EVENT, INVALID_EVENT)
    assert passed_over(record, RECOVERABLE) == INVALID_EVENT
    assert passed_over(record, [INVALID_EVENT]) is None
    assert passed_over(_worker_dead_letter(EVENT, SCORING_FAILED), [INVALID_EVENT]) == (
        SCORING_FAILED
    )


def test_a_truncated_or_valueless_dead_letter_is_never_sent() -> None:
    oversized = _worker_dead_letter(b"{" + b" " * MAX_MESSAGE_BYTES + b"}", INVALID_EVENT)
    assert dict(oversized.headers)["value_bytes"]  # the worker kept only the head
    assert passed_over(oversized, ERROR_TYPES) == TRUNCATED
    assert passed_over(oversized, RECOVERABLE) == INVALID_EVENT  # its type comes first
    assert passed_over(_record(None, WORKER_ERROR), RECOVERABLE) == NO_VALUE
    huge_key = dead_letter(
        Incoming("tx", 1, 7, 1.0, b"k" * MAX_MESSAGE_BYTES, EVENT), "w", WORKER_ERROR, "dlq"
    )
    assert dict(huge_key.headers)["key_bytes"]  # the worker kept only the head of its key
    record = Record("dlq", 0, 0, None, huge_key.key, huge_key.value, tuple(huge_key.headers))
    assert passed_over(record, RECOVERABLE) == TRUNCATED


def test_a_dead_letter_without_a_known_type_is_passed_over() -> None:
    assert passed_over(_record(EVENT, None), ERROR_TYPES) == "unknown"
    assert passed_over(_record(EVENT, "other"), ERROR_TYPES) == "other"


def test_summary_is_json_ready() -> None:
    result = RedriveResult("dlq", "tx", dry_run=False, read=3, redriven=2)
    result.passed_over[INVALID_EVENT] += 1
    result.committed = {1: 9, 0: 4}
    assert result.summary() == {
        "dead_letter_topic": "dlq",
        "to": "tx",
        "dry_run": False,
        "read": 3,
        "redriven": 2,
        "passed_over": {INVALID_EVENT: 1},
        "committed": {"0": 4, "1": 9},
        "complete": False,
    }


def test_cli_default_group_is_the_library_default() -> None:
    assert inspect.signature(redrive_cmd).parameters["group"].default == DEFAULT_GROUP


def test_cli_refuses_an_unknown_error_type_before_connecting() -> None:
    result = CliRunner().invoke(app, ["redrive", "--error-type", "invalid-event"])
    assert result.exit_code == 2
    assert "invalid-event" in result.output and ", ".join(ERROR_TYPES) in result.output


def test_an_undelivered_message_fails_the_run_before_it_commits() -> None:
    """A real client whose broker never answers (a closed port): its send times out."""
    from confluent_kafka import Producer

    from fraudstream.redrive import RedriveError, _deliver

    result = RedriveResult("dlq", "tx", dry_run=False, read=1, redriven=1)
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 300})
    producer.produce("tx", value=EVENT, key=b"k", on_delivery=result.on_delivery)
    with pytest.raises(RedriveError, match=r"1 of 1 redriven .* nothing committed"):
        _deliver(producer, result)
    assert result.failed == 1 and result.committed == {}


@pytest.mark.parametrize(
    ("headers", "origin"),
    [
        (None, None),
        ([], None),
        ([("other", b"x")], None),
        ([("other", b"x"), (REDRIVEN_FROM, b"dlq:2:9")], b"dlq:2:9"),
        ({REDRIVEN_FROM: b"dlq:0:1"}, b"dlq:0:1"),
        ({"other": b"x"}, None),
    ],
)
def test_the_worker_reads_where_a_message_was_redriven_from(
    headers: object, origin: object
) -> None:
    assert redriven_from(headers) == origin  # type: ignore[arg-type]


def test_a_redriven_message_keeps_its_origin_on_its_decision_and_on_a_new_dead_letter() -> None:
    record = {"transaction_id": "t", "score": 0.5, "action": "review"}
    plain = Incoming("tx", 1, 7, 1.0, b"k", EVENT)
    back = Incoming("tx", 1, 8, 1.0, b"k", EVENT, b"dlq:3:41")
    assert decision_message(record, plain, "decisions", 2.0).headers == []
    assert decision_message(record, back, "decisions", 2.0).headers == [
        (REDRIVEN_FROM, b"dlq:3:41")
    ]
    assert REDRIVEN_FROM not in dict(dead_letter(plain, "why", SCORING_FAILED, "dlq").headers)
    again = dict(dead_letter(back, "why", SCORING_FAILED, "dlq").headers)
    assert again[REDRIVEN_FROM] == b"dlq:3:41"
    assert again["source_offset"] == b"8"
