"""The local broker's own latency over time: publish at a fixed rate, read with a bare consumer.

    .venv/bin/python benchmarks/broker_floor.py [--rate 1000] [--seconds 25] [--fresh-seconds 10]

Starts ONE private local stack (``benchmarks/workspace.py``). Publishes ``--rate`` events/s
for ``--seconds`` to one topic (``fraudstream.publish.send_paced``, the product's producer
settings: idempotent, ``acks=all``, 5 ms linger; 300-byte values on 997 keys) while a bare
confluent-kafka consumer in a process of its own (``benchmarks/streaming.py``'s reference (c):
``fetch_max_wait_ms`` from the settings, no processing) reads it; then the
same for ``--fresh-seconds`` on a fresh topic of the same broker. Prints, per 5 s window of
send time, p50 and p99 of Kafka timestamp to receipt, and the broker's CPU per event; last,
one JSON line. No fraudstream worker runs: this is the floor under any consumer's latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

from benchmarks import streaming as bench  # noqa: E402

WINDOW_S = 5


def phase(ws: Any, topic: str, rate: float, seconds: float) -> dict[str, Any]:
    """Publish ``rate`` x ``seconds`` events to ``topic`` (a new one) under the floor consumer."""
    from fraudstream.kafka import ensure_topics, producer_config
    from fraudstream.publish import PublishResult, send_paced

    settings, bootstrap = ws.settings, ws.endpoints.kafka_bootstrap
    ensure_topics(settings.kafka, bootstrap, [topic])
    count = int(rate * seconds)
    broker = bench.broker_process(settings)
    done: dict[str, Any] = {}

    def messages(n: int) -> Any:
        for i in range(n):
            yield lambda _now_ms, i=i: (b"k%d" % (i % 997), b"x" * 300)

    def publish() -> None:
        cpu0 = bench.cpu_seconds(broker)
        done["pub"] = send_paced(
            messages(count), conf=producer_config(settings.kafka, bootstrap), topic=topic, rate=rate
        )
        done["cpu_s"] = bench.cpu_seconds(broker) - cpu0

    raw = bench.run_floor_consumer(settings, topic, 0, count, ws.work, publish)
    pub: PublishResult = done["pub"]
    if pub.delivered != count:
        raise RuntimeError(f"{topic}: {pub.summary()}")
    timed = np.asarray([(stamp, received - stamp) for stamp, received in raw], dtype=np.float64)
    windows = bench.windows(timed, WINDOW_S)
    return {
        "topic": topic,
        "rate": rate,
        "published_ev_s": pub.rate,
        "events": count,
        "broker_cpu_us_per_event": bench.per_event_us(done["cpu_s"], count),
        "windows": windows,
    }


def cpu_text(us: float | None) -> str:
    return (
        "not measured (a cluster named by --kafka-bootstrap)"
        if us is None
        else f"{us:.0f} µs/event"
    )


def main() -> None:
    from workspace import add_kafka_argument, private_workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--fresh-seconds", type=float, default=10.0)
    add_kafka_argument(parser)
    args = parser.parse_args()

    with private_workspace("fraudstream-broker-floor-", args.kafka_bootstrap) as ws:
        tag = uuid.uuid4().hex[:6]
        phases = [
            ("one topic", phase(ws, f"floor-a-{tag}", args.rate, args.seconds)),
            (
                "fresh topic, right after",
                phase(ws, f"floor-b-{tag}", args.rate, args.fresh_seconds),
            ),
        ]
    for label, result in phases:
        print(
            f"\n{label}: {result['events']:,} events at {result['published_ev_s']:.0f} ev/s, "
            f"broker CPU {cpu_text(result['broker_cpu_us_per_event'])}"
        )
        print("| send time | p50 | p99 |\n|---|---|---|")
        for w in result["windows"]:
            span = f"{w['from_s']:g}–{w['from_s'] + WINDOW_S:g} s"
            print(f"| {span} | {w['p50_ms']} ms | {w['p99_ms']} ms |")
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "phases": {label: result for label, result in phases},
            }
        )
    )


if __name__ == "__main__":
    main()
