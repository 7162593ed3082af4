"""``fraudstream redrive`` against a bare copy of the same topic: what choosing, stamping and
committing cost over reading and producing.

    .venv/bin/python benchmarks/redrive.py [--count 200000] [--rounds 3] [--kafka-bootstrap H:P]

On a private local stack (or ``--kafka-bootstrap``), writes ``--count`` dead letters as the
worker writes them (``streaming.worker.dead_letter`` of ~190-byte events; 80 %
``scoring_failed``, 10 % ``worker_error``, 10 % ``invalid_event``) to a new dead-letter topic,
then per round, in alternating order, into new topics:

* (r) :func:`fraudstream.redrive.redrive`: reads it to the end, sends the 90 % recoverable
  ones, commits; a second run must then read nothing (the commits held);
* (b) the floor: one confluent-kafka consumer assigned from the beginning, every record
  produced as it comes by the same idempotent producer settings, flushed at the end.

Reports each one's wall time, dead letters read per second and CPU of this process per dead
letter (all threads), and r / b. Imports the ``fraudstream`` package of the directory it is
run from. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd()))  # the package of the tree it is run from
sys.path.append(str(Path(__file__).resolve().parent))


def _dead_letters(count: int, source: str, dlq: str) -> list[tuple[bytes | None, bytes, Any]]:
    from fraudstream.dead_letters import INVALID_EVENT, SCORING_FAILED, WORKER_ERROR
    from streaming.worker import Incoming, dead_letter

    made = []
    for i in range(count):
        kind = (INVALID_EVENT, WORKER_ERROR)[i % 10] if i % 10 < 2 else SCORING_FAILED
        customer = f"c{i % 5000}"
        value = (
            f'{{"transaction_id":"tx-{i}","timestamp":"2026-11-21T10:15:00Z",'
            f'"customer_id":"{customer}","terminal_id":"T-{i % 10000}","amount":{i % 500 + 1}.5,'
            f'"currency":"EUR"}}'
        ).encode()
        out = dead_letter(
            Incoming(source, i % 4, i, time.time(), customer.encode(), value),
            f"{kind}: benchmark",
            kind,
            dlq,
        )
        assert out.value is not None
        made.append((out.key, out.value, out.headers))
    return made


def _bare_copy(conf: dict[str, Any], pconf: dict[str, Any], topic: str, to: str) -> int:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

    from fraudstream.consume import topic_partitions
    from fraudstream.publish import produce_retrying

    consumer = Consumer({**conf, "enable.partition.eof": True})
    producer = Producer(pconf)
    copied = 0
    try:
        partitions = topic_partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        reading = set(partitions)
        while reading:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    reading.discard(msg.partition())
                continue
            produce_retrying(producer, to, msg.key(), msg.value(), headers=msg.headers())
            copied += 1
        assert producer.flush(60) == 0
    finally:
        consumer.close()
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help="redrive's (default: the library's)"
    )
    from workspace import add_kafka_argument, private_workspace

    add_kafka_argument(parser)
    args = parser.parse_args()

    from confluent_kafka import Producer

    import fraudstream
    from fraudstream.kafka import consumer_config, ensure_topics, producer_config
    from fraudstream.publish import produce_retrying
    from fraudstream.redrive import CHECKPOINT_EVERY, redrive

    runs: list[dict[str, Any]] = []
    every = {} if args.checkpoint_every is None else {"checkpoint_every": args.checkpoint_every}
    with private_workspace("fraudstream-redrive-", args.kafka_bootstrap) as ws:
        kafka, bootstrap = ws.settings.kafka, ws.endpoints.kafka_bootstrap
        tag = uuid.uuid4().hex[:6]
        dlq = f"redrive-dlq-{tag}"
        ensure_topics(kafka, bootstrap, [dlq])
        producer = Producer(producer_config(kafka, bootstrap))
        for key, value, headers in _dead_letters(args.count, f"tx-{tag}", dlq):
            produce_retrying(producer, dlq, key, value, headers=headers)
        assert producer.flush(60) == 0
        expected = sum(1 for i in range(args.count) if i % 10 != 0)  # not invalid_event
        for round_ in range(args.rounds):
            order = ("r", "b") if round_ % 2 == 0 else ("b", "r")
            row: dict[str, Any] = {"order": "".join(order)}
            for which in order:
                to = f"redrive-to-{which}-{tag}-{round_}"
                ensure_topics(kafka, bootstrap, [to])
                wall, cpu = time.perf_counter(), time.process_time()
                if which == "r":
                    group = f"redrive-{tag}-{round_}"
                    result = redrive(kafka, bootstrap, dlq, to, group_id=group, **every)
                    n = result.read
                    assert (n, result.redriven) == (args.count, expected), result.summary()
                else:
                    conf = consumer_config(kafka, bootstrap, f"bare-{tag}-{round_}")
                    n = _bare_copy(conf, producer_config(kafka, bootstrap), dlq, to)
                    assert n == args.count
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                row[which] = {
                    "s": round(wall, 3),
                    "read_per_s": round(n / wall),
                    "cpu_us_per_dead_letter": round(1e6 * cpu / n, 1),
                }
                if which == "r":  # the commits held: a second run reads nothing
                    again = redrive(kafka, bootstrap, dlq, to, group_id=group)
                    assert (again.read, again.redriven) == (0, 0), again.summary()
            row["r_over_b_wall"] = round(row["r"]["s"] / row["b"]["s"], 2)
            row["r_over_b_cpu"] = round(
                row["r"]["cpu_us_per_dead_letter"] / row["b"]["cpu_us_per_dead_letter"], 2
            )
            runs.append(row)
            print(row, file=sys.stderr)
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "package": str(Path(fraudstream.__file__).parent),
                "kafka": args.kafka_bootstrap or "local broker (Tansu, memory)",
                "count": args.count,
                "checkpoint_every": args.checkpoint_every or CHECKPOINT_EVERY,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
