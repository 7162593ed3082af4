"""Dead letters fit the producer's message limit whatever the input's size, and one the
broker still refuses as too large is sent again smaller, never retried unchanged forever.

librdkafka checks a message's size (key + value + headers) when it is queued, so the checks
here queue each dead letter on a real producer that is never connected (nothing is sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from fraudstream.config import Settings
from fraudstream.metrics import WorkerMetrics
from fraudstream.schema import MAX_MESSAGE_BYTES
from streaming.worker import (
    DEAD_LETTER_MAX_BYTES,
    DEAD_LETTER_MAX_VALUE_BYTES,
    BatchProcessor,
    Incoming,
    Outgoing,
    dead_letter,
    message_bytes,
    smaller_dead_letter,
)

pytestmark = pytest.mark.unit

LONG_ERROR = "amount: " + "é" * 5000  # multi-byte: the header is longer in bytes than in chars


@pytest.fixture
def producer() -> Iterator[Producer]:
    unconnected = Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0})
    yield unconnected
    unconnected.purge()


def queue(producer: Producer, out: Outgoing) -> None:
    """Queue ``out`` as the worker's output producer does (raises if it is too large)."""
    producer.produce(out.topic, value=out.value, key=out.key, headers=list(out.headers) or None)


@pytest.mark.parametrize(
    ("key_size", "value_size"),
    [
        (1, 999_770),  # the smallest malformed value whose whole dead letter was refused
        (1, MAX_MESSAGE_BYTES),  # the largest value the worker parses
        (1, MAX_MESSAGE_BYTES + 1),  # refused before parsing
        (999_000, 10),  # a huge key
        (600_000, 600_000),
    ],
)
def test_every_dead_letter_fits_the_producer_limit(
    producer: Producer, key_size: int, value_size: int
) -> None:
    key, value = b"k" * key_size, b"{" * value_size
    message = Incoming("transactions", 3, 7, 1.0, key, value, redriven_from=b"dlq:0:5")
    letter = dead_letter(message, LONG_ERROR, "invalid_event", "dlq")
    assert message_bytes(letter) <= DEAD_LETTER_MAX_BYTES
    queue(producer, letter)  # librdkafka takes it
    headers = dict(letter.headers)
    assert letter.value == value[:DEAD_LETTER_MAX_VALUE_BYTES]
    assert letter.key == key[:DEAD_LETTER_MAX_VALUE_BYTES]
    assert ("value_bytes" in headers) == (value_size > DEAD_LETTER_MAX_VALUE_BYTES)
    assert ("key_bytes" in headers) == (key_size > DEAD_LETTER_MAX_VALUE_BYTES)
    if "value_bytes" in headers:
        assert headers["value_bytes"] == str(value_size).encode()
    if "key_bytes" in headers:
        assert headers["key_bytes"] == str(key_size).encode()
    assert headers["redriven_from"] == b"dlq:0:5" and headers["source_offset"] == b"7"


def test_a_dead_letter_that_fits_keeps_its_key_and_bytes_whole(producer: Producer) -> None:
    value = b"{" * (DEAD_LETTER_MAX_BYTES - 10_000)
    letter = dead_letter(Incoming("tx", 0, 1, None, b"key", value), "x", "invalid_event", "dlq")
    assert (letter.key, letter.value) == (b"key", value)
    assert not {"value_bytes", "key_bytes"} & dict(letter.headers).keys()
    queue(producer, letter)


def _refused() -> KafkaException:
    return KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))


def test_a_dead_letter_refused_as_too_large_gets_smaller_then_empty() -> None:
    value = b"x" * 500_000
    letter = dead_letter(Incoming("tx", 0, 1, None, b"k", value), "x", "worker_error", "dlq")
    assert letter.value == value  # fits the producer's limit: sent whole first
    head = smaller_dead_letter(letter, _refused())
    assert head.value == value[:DEAD_LETTER_MAX_VALUE_BYTES]
    assert dict(head.headers)["value_bytes"] == b"500000"
    empty = smaller_dead_letter(head, _refused())
    assert empty.value == b"" and dict(empty.headers)["value_bytes"] == b"500000"
    assert [n for n, _ in empty.headers].count("value_bytes") == 1
    assert smaller_dead_letter(empty, _refused()) == empty  # nothing left to cut


def test_other_failures_and_decisions_are_sent_again_unchanged() -> None:
    letter = dead_letter(
        Incoming("tx", 0, 1, None, b"k", b"x" * 100_000), "x", "worker_error", "dlq"
    )
    timed_out = KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert smaller_dead_letter(letter, timed_out) is letter
    decision = Outgoing("decisions", b"t-1", b"{" * 100_000, [])
    assert smaller_dead_letter(decision, _refused()) is decision


class SmallTopic:
    """A delivery whose dead-letter topic refuses messages over ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[list[Outgoing]] = []

    async def deliver(self, outputs: Sequence[Outgoing]) -> list[BaseException | None]:
        self.sent.append(list(outputs))
        return [_refused() if message_bytes(o) > self.limit else None for o in outputs]


def test_produce_delivers_a_refused_dead_letter_smaller_and_the_rest_as_is() -> None:
    delivery = SmallTopic(limit=100_000)
    processor = BatchProcessor(
        Settings(),
        scorer=None,  # type: ignore[arg-type]  # produce does not score
        retry_pause_s=0.0,
        delivery=delivery,  # type: ignore[arg-type]
        metrics=WorkerMetrics(60.0),
    )
    big = dead_letter(Incoming("tx", 0, 1, None, b"k", b"x" * 300_000), "x", "worker_error", "d")
    small = dead_letter(Incoming("tx", 0, 2, None, b"j", b"y" * 10), "x", "worker_error", "d")
    asyncio.run(asyncio.wait_for(processor.produce([big, small]), timeout=10))
    assert [len(batch) for batch in delivery.sent] == [2, 1]
    (resent,) = delivery.sent[1]
    assert resent.value == big.value[:DEAD_LETTER_MAX_VALUE_BYTES]  # type: ignore[index]
    assert dict(resent.headers)["value_bytes"] == b"300000"


class Closed:
    """The output producer after ``flush_outputs`` closed it (the worker is stopping)."""

    async def deliver(self, outputs: Sequence[Outgoing]) -> list[BaseException | None]:
        raise RuntimeError("the output producer is closed (the worker is stopping)")


def test_a_batch_whose_dead_letters_cannot_be_sent_is_not_counted() -> None:
    """``dead_letter_all`` counts the batch once its dead letters are delivered: a batch
    that stays unacked (to be read again) is not counted as consumed or dead-lettered."""
    metrics = WorkerMetrics(60.0)
    processor = BatchProcessor(
        Settings(),
        scorer=None,  # type: ignore[arg-type]
        delivery=Closed(),  # type: ignore[arg-type]
        metrics=metrics,
    )
    batch = [Incoming("tx", 0, i, None, b"k", b"{}") for i in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(processor.dead_letter_all(batch, ValueError("a bug")))
    assert metrics.consumed.values.get((), 0.0) == 0.0
    assert not any(metrics.dead_letters.values.values())
    assert not any(metrics.batch_failures.values.values())


def test_a_redriven_from_header_that_is_not_ours_is_ignored(producer: Producer) -> None:
    """A message whose ``redriven_from`` is 1 MB (not a topic:partition:offset): its dead
    letter must still fit, so the header is not taken."""
    from fraudstream.dead_letters import MAX_REDRIVEN_FROM_BYTES, redriven_from

    huge = b"x" * 1_000_000
    assert redriven_from([("redriven_from", huge)]) is None
    assert redriven_from({"redriven_from": huge}) is None
    assert redriven_from([("redriven_from", b"dlq:3:17")]) == b"dlq:3:17"
    assert redriven_from([("redriven_from", b"t" * MAX_REDRIVEN_FROM_BYTES)]) is not None
    message = Incoming(
        "tx", 0, 1, None, b"k", b"{", redriven_from=redriven_from([("redriven_from", huge)])
    )
    queue(producer, dead_letter(message, "x", "invalid_event", "dlq"))
