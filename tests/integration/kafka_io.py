"""Writing raw messages to a topic and reading a whole topic back, for integration tests
(the default Kafka settings; the broker is the session's)."""

from __future__ import annotations

from confluent_kafka import Producer

from fraudstream.config import Settings
from fraudstream.consume import Record, read_records
from fraudstream.kafka import producer_config

KAFKA = Settings().kafka


def read_all(bootstrap: str, topic: str, limit: int | None = None) -> list[Record]:
    """Every record of ``topic`` (or the first ``limit``), from the beginning."""
    return list(read_records(KAFKA, bootstrap, topic, from_beginning=True, limit=limit))


def produce_raw(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, list]]
) -> None:
    """Produce ``(key, value, headers)`` messages as they are, and wait for every delivery."""
    producer = Producer(producer_config(KAFKA, bootstrap))
    for key, value, headers in messages:
        producer.produce(topic, value=value, key=key, headers=headers)
    assert producer.flush(30) == 0
