"""Redis stopped for 30 s under a running worker (issue 6, point 4).

The worker keeps deciding while Redis is down (the degraded policy: features it cannot read
are missing, amounts over the limit are not approved), nothing goes to the dead-letter topic,
the process stays up, and once Redis is back the decisions are normal again within 30 s,
without a restart. Redis runs privately (append-only file, so its data survives the stop).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.small_world import process_env
from fraudstream import stack
from fraudstream.kafka import confluent_config, ensure_topics
from fraudstream.publish import publish_events

from .private_redis import start_redis
from .world import build_world

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RATE = 20.0  # events per second, for the whole test
UP_BEFORE_S, DOWN_S, UP_AFTER_S = 12.0, 30.0, 40.0
RECOVERY_S = 30.0


def test_worker_decides_through_a_redis_outage_and_recovers(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    port = stack.free_port()
    redis_dir = tmp_path / "redis"
    info = start_redis(port, redis_dir, durable=True)
    redis_url = f"redis://127.0.0.1:{port}/0"
    total = int(RATE * (UP_BEFORE_S + DOWN_S + UP_AFTER_S))
    try:
        world = build_world(tmp_path / "world", kafka_bootstrap, redis_url, seed=44, held_out=total)
        settings = world.settings
        tag = uuid.uuid4().hex[:8]
        topics = {"in": f"tx-{tag}", "out": f"decisions-{tag}", "dlq": f"tx-{tag}.dlq"}
        ensure_topics(settings.kafka, kafka_bootstrap, list(topics.values()))
        env = process_env(
            settings,
            tmp_path / "stack",
            {
                "FRAUDSTREAM_REDIS__SOCKET_TIMEOUT_S": "1",
                "FRAUDSTREAM_TOPICS__TRANSACTIONS": topics["in"],
                "FRAUDSTREAM_TOPICS__DECISIONS": topics["out"],
                "FRAUDSTREAM_TOPICS__DEAD_LETTER": topics["dlq"],
            },
        )
        log = tmp_path / "worker.log"
        argv = [sys.executable, "-m", "fraudstream", "worker", "--app-id", f"outage-{tag}"]
        with stack.running(argv, log, env=env) as proc:
            deadline = time.monotonic() + 90
            while "[^Worker]: Ready" not in log.read_text():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "worker not ready"
                time.sleep(0.3)

            events = world.new.drop(columns=["is_fraud"])
            publisher = threading.Thread(
                target=publish_events,
                args=(events,),
                kwargs={
                    "kafka": settings.kafka,
                    "bootstrap": kafka_bootstrap,
                    "topic": topics["in"],
                    "rate": RATE,
                },
            )
            t0 = time.time()
            publisher.start()
            time.sleep(UP_BEFORE_S)
            assert stack.stop_process(info)
            down_at = time.time()
            time.sleep(DOWN_S)
            up_at = time.time()  # from here Redis may answer
            info = start_redis(port, redis_dir, durable=True)
            publisher.join(timeout=UP_AFTER_S + 60)
            assert not publisher.is_alive()

            decisions, dead = _read(settings, kafka_bootstrap, topics, total)
            assert proc.poll() is None, "the worker died:\n" + log.read_text()[-3000:]
    finally:
        stack.stop_process(info)

    # nothing lost, nothing dead-lettered
    assert dead == []
    ids = {d["transaction_id"] for d in decisions}
    assert ids == set(events["transaction_id"].astype(str))

    def decided(d: dict[str, Any]) -> float:
        return datetime.fromisoformat(d["decided_at"]).timestamp()

    # classified by when each was decided (scored): a backlog does not blur the windows
    before = [d for d in decisions if decided(d) < down_at - 0.5]
    during = [d for d in decisions if down_at + 0.5 < decided(d) < up_at - 0.5]
    settled = [d for d in decisions if decided(d) > up_at + RECOVERY_S]
    assert before and during and settled, (len(before), len(during), len(settled))
    assert t0 < down_at < up_at
    # up: normal; down: degraded, with the reason, and never approved above the limit
    assert not any(d["degraded"] for d in before)
    normal = [d for d in during if not d["degraded"]]
    assert not normal, (
        f"{len(normal)} of {len(during)} decided normally during the outage "
        f"(down {down_at:.1f}, up {up_at:.1f}): "
        + str([(d["transaction_id"], d["decided_at"], d["latency_ms"]) for d in normal[:3]])
    )
    assert all("customer history unavailable" in d["degraded_reasons"] for d in during), during[0]
    # and says that the transaction is missing from its customer's history
    assert all("customer history not updated" in d["degraded_reasons"] for d in during), during[0]
    limit = settings.scoring.degraded_max_approve_amount
    assert not [d for d in during if d["action"] == "approve" and d["amount"] > limit]
    # back to normal within RECOVERY_S of Redis returning, without a restart
    assert not any(d["degraded"] for d in settled), [d for d in settled if d["degraded"]][:1]
    normal_again = min(decided(d) for d in decisions if decided(d) > up_at and not d["degraded"])
    print(  # the figures benchmarks/RESULTS.md reports (pytest -s)
        f"redis outage: {len(decisions)} decisions for {total} events, {len(during)} "
        f"decided while down ({DOWN_S:.0f} s), all degraded; first normal decision "
        f"{normal_again - up_at:.2f} s after redis-server started again; 0 dead letters"
    )


def _read(
    settings: Any, bootstrap: str, topics: dict[str, str], want: int
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Decision records and dead letters, until ``want`` transactions are decided or 60 s
    passed."""
    conf = confluent_config(settings.kafka, bootstrap)
    conf.update({"group.id": f"outage-reader-{uuid.uuid4().hex[:6]}"})
    consumer = Consumer(conf)
    consumer.assign(
        [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in (topics["out"], topics["dlq"])
            for p in range(settings.kafka.partitions)
        ]
    )
    decisions: list[dict[str, Any]] = []
    dead: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len({d["transaction_id"] for d in decisions}) < want:
            assert time.monotonic() < deadline, f"{len(decisions)} of {want} decisions"
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                if msg.topic() == topics["out"]:
                    decisions.append(orjson.loads(msg.value()))
                else:
                    dead.append(msg.value())
    finally:
        consumer.close()
    return decisions, dead
