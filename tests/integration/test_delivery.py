"""The worker's output producer on the real broker: every delivery awaited, errors returned."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fraudstream.config import Settings
from fraudstream.kafka import consumer_config
from streaming.delivery import DeliveringProducer
from streaming.worker import Outgoing

pytestmark = pytest.mark.integration


def test_a_batch_is_delivered_in_full_before_deliver_returns(
    service_settings: Settings, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("delivery")
    producer = DeliveringProducer(service_settings.kafka, kafka_bootstrap)
    outputs = [
        Outgoing(topic, f"k{i}".encode(), f"v{i}".encode(), [("h", b"x")]) for i in range(2000)
    ]
    too_big = Outgoing(topic, b"big", b"x" * 3_000_000, [])  # over the producer's message limit

    async def run() -> tuple[list[object], list[object]]:
        first = await producer.deliver(outputs)
        second = await producer.deliver([too_big])
        return list(first), list(second)

    try:
        first, second = asyncio.run(run())
    finally:
        assert producer.close() == 0
    assert first == [None] * len(outputs)
    assert second[0] is not None  # the error is returned, not raised or lost
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(producer.deliver(outputs[:1]))

    consumer = Consumer(consumer_config(service_settings.kafka, kafka_bootstrap, "delivery-check"))
    consumer.assign(
        [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for p in range(service_settings.kafka.partitions)
        ]
    )
    seen: set[bytes] = set()
    try:
        for _ in range(100):
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    seen.add(msg.key())
            if len(seen) >= len(outputs):
                break
    finally:
        consumer.close()
    assert seen == {o.key for o in outputs}


def test_failures_reported_after_sending_come_back_in_order_for_resending(
    service_settings: Settings, topic_factory: Callable[..., str]
) -> None:
    """A broker that never answers: each message's delivery times out, and deliver returns
    that error in the message's place (nothing raised, nothing dropped silently)."""
    import socket

    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    producer = DeliveringProducer(service_settings.kafka, dead, message_timeout_ms=1500)
    outputs = [Outgoing("nowhere", f"k{i}".encode(), b"same", []) for i in range(3)]
    # dead letters of the same bytes: only their headers differ, which reports do not carry
    outputs += [
        Outgoing("nowhere", b"k", b"same", [("source_offset", str(o).encode())]) for o in (7, 8)
    ]
    try:
        results = asyncio.run(producer.deliver(outputs))
    finally:
        producer.close(timeout_s=1)
    assert len(results) == len(outputs)
    assert all(r is not None and "timed out" in str(r).lower() for r in results), results
