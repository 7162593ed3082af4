"""A real Faust worker (built by ``streaming.app.create_app``) forwards an event.

The worker runs as a subprocess (``tests/integration/faust_smoke_app.py``) against
the session's broker, with its own topics and consumer group. The test produces
one event with confluent-kafka and expects it, unchanged, on the output topic.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from fraudstream.config import Settings
from fraudstream.kafka import confluent_config, producer_config
from fraudstream.stack import running

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Start-up is about 5 s here (see benchmarks/RESULTS.md); leave room for a slow CI.
ROUND_TRIP_TIMEOUT_S = 60.0

pytestmark = pytest.mark.integration


@pytest.fixture
def faust_worker(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[tuple[str, str, Path]]:
    """A running forwarding worker: yields (source topic, sink topic, log path)."""
    source = topic_factory("faust-in")
    sink = topic_factory("faust-out")
    log = tmp_path / "worker.log"
    argv = [
        sys.executable, "-m", "tests.integration.faust_smoke_app",
        "--bootstrap", kafka_bootstrap,
        "--app-id", group_factory("faust-smoke"),
        "--source", source,
        "--sink", sink,
        "--loglevel", "INFO",
        "--datadir", str(tmp_path),
    ]  # fmt: skip
    with running(argv, log, cwd=REPO_ROOT, stop_timeout_s=20):
        yield source, sink, log


def test_worker_forwards_event_to_output_topic(
    kafka_bootstrap: str, faust_worker: tuple[str, str, Path]
) -> None:
    source, sink, log = faust_worker
    kafka = Settings().kafka
    key = f"card-{uuid.uuid4().hex[:8]}".encode()
    value = b'{"amount": 12.5, "merchant": "smoke"}'

    producer = Producer(producer_config(kafka, kafka_bootstrap))
    producer.produce(source, key=key, value=value)
    assert producer.flush(10) == 0, "the event was not delivered to the input topic"

    # assign(), not subscribe(): reading the output needs no group join.
    conf = confluent_config(kafka, kafka_bootstrap)
    conf.update({"group.id": "unused", "enable.auto.commit": False})
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(sink, 0, OFFSET_BEGINNING)])
    received: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + ROUND_TRIP_TIMEOUT_S
    try:
        while time.monotonic() < deadline and (key, value) not in received:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                received.append((msg.key(), msg.value()))
    finally:
        consumer.close()

    assert (key, value) in received, (
        f"event not forwarded to {sink} within {ROUND_TRIP_TIMEOUT_S:g}s; got {received}; "
        f"worker log:\n{log.read_text()[-3000:]}"
    )
    assert received.count((key, value)) == 1
