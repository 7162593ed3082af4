"""``fraudstream score-batch`` gives the worker's scores for the same events, to 1e-6.

A small world (history backfilled, a model, terminals materialised, customers' history in
Redis); the real worker subprocess scores the held-out events from a topic of the real
broker; then ``fraudstream score-batch`` scores the same events from a Parquet file (their
history given with ``--history``) through Feast's historical features. Per transaction id:
score to 1e-6, the same action, degraded flag and top-3 reason features.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.small_world import process_env
from fraudstream.kafka import confluent_config, ensure_topics, producer_config
from fraudstream.publish import encode, event_payloads
from fraudstream.stack import running

from .world import build_world

pytestmark = pytest.mark.integration

N_EVENTS = 300
ARRIVAL_TIMEOUT_S = 90.0


def test_score_batch_equals_the_worker(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    world = build_world(tmp_path / "w", kafka_bootstrap, redis_url, seed=35, held_out=N_EVENTS)
    settings = world.settings
    new = world.new.drop(columns=["is_fraud"]).reset_index(drop=True)
    tag = uuid.uuid4().hex[:8]
    topics = {
        "transactions": f"sb-tx-{tag}",
        "decisions": f"sb-dec-{tag}",
        "dead_letter": f"sb-dlq-{tag}",
    }
    ensure_topics(settings.kafka, kafka_bootstrap, list(topics.values()))
    env = process_env(
        settings,
        tmp_path / "stack",
        {f"FRAUDSTREAM_TOPICS__{k.upper()}": v for k, v in topics.items()}
        | {"FRAUDSTREAM_SCORING__BATCH_SIZE": "64"},
    )

    worker: dict[str, dict[str, Any]] = {}
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "fraudstream", "worker", "--app-id", f"sb-{tag}"]
    with running(argv, log, env=env) as proc:
        producer = Producer(producer_config(settings.kafka, kafka_bootstrap))
        for event in event_payloads(new):
            key, value = encode(event)
            producer.produce(topics["transactions"], key=key, value=value)
        assert producer.flush(15) == 0
        conf = confluent_config(settings.kafka, kafka_bootstrap)
        consumer = Consumer({**conf, "group.id": "unused", "enable.auto.commit": False})
        consumer.assign(
            [
                TopicPartition(topics["decisions"], p, OFFSET_BEGINNING)
                for p in range(settings.kafka.partitions)
            ]
        )
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        try:
            while len(worker) < N_EVENTS and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    record = orjson.loads(msg.value())
                    worker[record["transaction_id"]] = record
        finally:
            consumer.close()
    assert len(worker) == N_EVENTS, f"{len(worker)} decisions; log:\n{log.read_text()[-3000:]}"

    events_path, past_path, out = (
        tmp_path / "new.parquet",
        tmp_path / "past.parquet",
        tmp_path / "out.parquet",
    )
    new.to_parquet(events_path)
    world.past.to_parquet(past_path)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fraudstream",
            "score-batch",
            "--transactions",
            str(events_path),
            "--history",
            str(past_path),
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"score-batch: {summary} (wall {took:.1f}s)")
    assert summary["rows"] == N_EVENTS

    batch = pd.read_parquet(out).set_index("transaction_id")
    assert sorted(batch.index) == sorted(worker)
    for tx, decision in worker.items():
        row = batch.loc[tx]
        assert abs(row["score"] - decision["score"]) <= 1e-6, (tx, row["score"], decision["score"])
        assert row["action"] == decision["action"], tx
        assert bool(row["degraded"]) == decision["degraded"], tx
        assert row["model_version"] == decision["model_version"]
        reasons = [r["feature"] for r in json.loads(row["reasons"])]
        assert reasons == [r["feature"] for r in decision["reasons"]], tx
    assert batch["score"].std() > 0
