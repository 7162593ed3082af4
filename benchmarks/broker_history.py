"""What a partition's stored record batches cost the local broker: the same paced load on
topics that already hold 0 to N batches.

    .venv/bin/python benchmarks/broker_history.py [--batches 0,4000,16000] [--rate 1000]
        [--seconds 6]

Starts ONE private local stack (``benchmarks/workspace.py``). For each count N of
``--batches`` (and, last, N messages in N/500 batches of 500), a fresh one-partition topic is
filled with N record batches of one 300-byte message each (a produce and a flush per batch),
then ``--rate`` events/s are published for ``--seconds`` (``fraudstream.publish.send_paced``,
the product's producer settings) while a bare confluent-kafka consumer (``fetch_max_wait_ms``
from the settings, from the end of the topic) reads them. Per topic: the broker's CPU per
paced event, and p50/p99 of Kafka timestamp to receipt (the first second left out: a new
producer's first messages wait for its connection). Prints a Markdown table, last one JSON line.

Why: Tansu 0.6's object-store engine (``memory://``) keeps each produced record batch as
an object, and its fetch lists every stored batch of the partition to find the ones at or
after the fetch offset (``tansu-storage/src/dynostore.rs``, ``fetch``). A consumer at the
end of a growing partition therefore pays for the partition's whole history of batches,
not messages, on every fetch that finds new data. Kafka's offset index makes that lookup
logarithmic; nothing here changes the broker, this only measures it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_END, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

from benchmarks import streaming as bench  # noqa: E402

VALUE = b"x" * 300
BIG_BATCH = 500


def fill(conf: dict[str, Any], topic: str, batches: int, per_batch: int) -> None:
    """``batches`` record batches of ``per_batch`` messages each into partition 0."""
    producer = Producer(conf)
    for _ in range(batches):
        for _ in range(per_batch):
            producer.produce(topic, key=b"k", value=VALUE, partition=0)
        producer.flush()


def paced_phase(ws: Any, topic: str, rate: float, seconds: float) -> dict[str, Any]:
    """Publish at ``rate`` for ``seconds`` under a bare consumer at the end of ``topic``."""
    from fraudstream.kafka import producer_config
    from fraudstream.publish import send_paced

    settings, bootstrap = ws.settings, ws.endpoints.kafka_bootstrap
    consumer = bench.bare_consumer(settings, bootstrap, [TopicPartition(topic, 0, OFFSET_END)])
    for _ in range(10):  # the end offset resolved before the first paced message
        consumer.poll(0.1)
    count = int(rate * seconds)
    timed: list[tuple[int, float]] = []

    def consume() -> None:
        deadline = time.monotonic() + seconds + 60
        while len(timed) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                timed.append((msg.timestamp()[1], time.time() * 1000))

    reading = threading.Thread(target=consume)
    reading.start()
    broker = bench.broker_process(settings)
    cpu0 = bench.cpu_seconds(broker)
    messages = (lambda _now_ms, i=i: (b"k%d" % (i % 997), VALUE) for i in range(count))
    pub = send_paced(
        messages, conf=producer_config(settings.kafka, bootstrap), topic=topic, rate=rate
    )
    reading.join()
    cpu = bench.cpu_seconds(broker) - cpu0
    consumer.close()
    if len(timed) != count or pub.delivered != count:
        raise RuntimeError(f"{topic}: read {len(timed)} of {count}; {pub.summary()}")
    stamps = np.asarray([s for s, _ in timed], dtype=np.float64)
    latency = np.asarray([r - s for s, r in timed], dtype=np.float64)[stamps >= stamps.min() + 1000]
    return {
        "published_ev_s": round(pub.rate),
        "broker_cpu_us_per_event": bench.per_event_us(cpu, count),
        "p50_ms": round(float(np.percentile(latency, 50)), 1),
        "p99_ms": round(float(np.percentile(latency, 99)), 1),
    }


def main() -> None:
    from workspace import private_workspace

    from fraudstream.kafka import ensure_topics, producer_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="0,4000,16000", help="stored batches per topic")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    counts = [int(n) for n in args.batches.split(",") if n]
    layouts = [(n, 1) for n in counts] + [(max(counts) // BIG_BATCH, BIG_BATCH)]

    rows = []
    with private_workspace("fraudstream-broker-history-") as ws:
        settings, bootstrap = ws.settings, ws.endpoints.kafka_bootstrap
        one_by_one = producer_config(settings.kafka, bootstrap, linger_ms=0)
        for batches, per_batch in layouts:
            topic = f"history-{batches}x{per_batch}-{uuid.uuid4().hex[:6]}"
            ensure_topics(settings.kafka, bootstrap, [topic], partitions=1)
            fill(one_by_one, topic, batches, per_batch)
            row = {"stored_batches": batches, "stored_messages": batches * per_batch}
            row |= paced_phase(ws, topic, args.rate, args.seconds)
            bench.log(json.dumps(row))
            rows.append(row)
    print("| stored batches | stored messages | broker CPU per paced event | p50 | p99 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['stored_batches']:,} | {r['stored_messages']:,} | "
            f"{r['broker_cpu_us_per_event']:.0f} µs | {r['p50_ms']} ms | {r['p99_ms']} ms |"
        )
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "rate": args.rate,
                "seconds": args.seconds,
                "fetch_max_wait_ms": ws.settings.kafka.fetch_max_wait_ms,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
