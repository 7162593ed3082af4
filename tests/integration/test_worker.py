"""``fraudstream worker`` end to end on real Kafka, Redis and Feast.

A small world (simulated history, backfill, ``feast apply``, a trained model, terminal
snapshot materialised, customer history in Redis) is built by ``world.build_world`` in a
private Feast project, so that other tests' Redis keys never mix in. The worker runs as a subprocess
(``python -m fraudstream worker``) with its own topics and consumer group. The test
publishes N valid events and M malformed messages and expects exactly N decisions (one
per transaction, scores equal to :meth:`Scorer.score` in this process) and M dead letters
(original bytes and key, an error header naming the problem), then stops the worker with
SIGTERM and expects a clean exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.small_world import process_env, run_cli
from fraudstream.config import Settings
from fraudstream.consume import read_records
from fraudstream.kafka import confluent_config, ensure_topics, producer_config
from fraudstream.publish import encode, event_payloads
from fraudstream.scoring import build_scorer
from fraudstream.stack import resolve_endpoints, running
from streaming.worker import DEAD_LETTER_MAX_VALUE_BYTES

from .world import build_world

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
N_VALID = 300
BATCH_SIZE = 64
#: Worker start-up (group join, about 5 s) plus scoring; generous for a slow CI.
ARRIVAL_TIMEOUT_S = 60.0
GRACE_S = 3.0

#: (key, value, a word the ``error`` header must contain) of each malformed message.
MALFORMED: list[tuple[bytes, bytes, str]] = [
    (b"bad-json", b'{"transaction_id": "x", ', "Invalid JSON"),
    (b"bad-utf8", b"\xff\xfe\x00not utf-8", "UTF-8"),
    (
        b"bad-missing",
        b'{"transaction_id":"m1","timestamp":"2026-01-01T00:00:00Z","customer_id":"c","amount":3}',
        "terminal_id",
    ),
    (
        b"bad-zero",
        b'{"transaction_id":"m2","timestamp":"2026-01-01T00:00:00Z","customer_id":"c",'
        b'"terminal_id":"t","amount":0}',
        "amount",
    ),
    (
        b"bad-nan",
        b'{"transaction_id":"m3","timestamp":"2026-01-01T00:00:00Z","customer_id":"c",'
        b'"terminal_id":"t","amount":NaN}',
        "amount",
    ),
    (
        b"bad-naive",
        b'{"transaction_id":"m4","timestamp":"2026-01-01T00:00:00","customer_id":"c",'
        b'"terminal_id":"t","amount":5}',
        "timestamp",
    ),
    (
        b"bad-type",
        b'{"transaction_id":"m5","timestamp":"2026-01-01T00:00:00Z","customer_id":"c",'
        b'"terminal_id":"t","amount":"12.5"}',
        "amount",
    ),
    # fuzzed corpus (issue 6, point 5): each would once have stopped or stalled the worker
    (
        b"bad-future",
        b'{"transaction_id":"m6","timestamp":"2126-01-01T00:00:00Z","customer_id":"c",'
        b'"terminal_id":"t","amount":5}',
        "worker's clock",
    ),
    (
        b"bad-past",
        b'{"transaction_id":"m7","timestamp":"0001-01-01T00:00:00+01:00","customer_id":"c",'
        b'"terminal_id":"t","amount":5}',
        "timestamp",
    ),
    (
        b"bad-inf",
        b'{"transaction_id":"m8","timestamp":"2026-01-01T00:00:00Z","customer_id":"c",'
        b'"terminal_id":"t","amount":1e999}',
        "amount",
    ),
    (
        b"bad-bigint",
        b'{"transaction_id":"m9","timestamp":"2026-01-01T00:00:00Z","customer_id":"c",'
        b'"terminal_id":"t","amount":1' + b"0" * 400 + b"}",
        "amount",
    ),
    (b"bad-array", b"[1, 2]", "object"),
    (b"bad-number", b"42", "object"),
    (
        b"bad-huge",
        b'{"transaction_id":"m10","pad":"' + b"x" * 1_000_100 + b'"}',
        "1,000,000-byte limit",
    ),
    (  # parsed, but its whole dead letter (value + headers) exceeds the producer's limit
        b"bad-near-limit",
        b'{"transaction_id":"m11","pad":"' + b"x" * 999_900,
        "Invalid JSON",
    ),
]
#: The malformed messages whose dead letters keep only the head of their value.
CUT_TO_THE_HEAD = {b"bad-huge", b"bad-near-limit"}


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str
) -> dict[str, Any]:
    """Model, Feast repo and Redis state of a private Feast project (its own Redis keys);
    ``new``: held-out events timed after the terminal refresh, labels dropped."""
    built = build_world(
        tmp_path_factory.mktemp("worker"), kafka_bootstrap, redis_url, seed=33, held_out=N_VALID
    )
    new = built.new.drop(columns=["is_fraud"]).reset_index(drop=True)
    return {
        "settings": built.settings,
        "endpoints": resolve_endpoints(built.settings),
        "new": new,
        "tag": f"w{uuid.uuid4().hex[:8]}",
    }


def _consumer(settings: Settings, bootstrap: str, topics: list[str]) -> Consumer:
    conf = confluent_config(settings.kafka, bootstrap)
    conf.update({"group.id": "unused", "enable.auto.commit": False})
    consumer = Consumer(conf)
    consumer.assign(
        [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for topic in topics
            for p in range(settings.kafka.partitions)
        ]
    )
    return consumer


def test_worker_scores_valid_events_and_dead_letters_the_rest(
    world: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = world["settings"]
    endpoints = world["endpoints"]
    new: pd.DataFrame = world["new"]
    tag = world["tag"]
    bootstrap = endpoints.kafka_bootstrap
    topics = {
        "transactions": f"tx-{tag}",
        "decisions": f"decisions-{tag}",
        "dead_letter": f"tx-{tag}.dlq",
    }
    ensure_topics(settings.kafka, bootstrap, list(topics.values()))

    # the expected decisions, from the same history state, before the worker changes it
    scorer = build_scorer(settings, endpoints)
    expected = {d.transaction_id: d for d in scorer.score(new, update=False).decisions}
    assert len(expected) == N_VALID
    # a customer whose stored state is corrupt: its event cannot be scored, the rest can
    poisoned = new.iloc[[0]].copy()
    poisoned["transaction_id"] = pd.array(["poisoned-1"], dtype="string[pyarrow]")
    poisoned["customer_id"] = pd.array(["poison-customer"], dtype="string[pyarrow]")
    scorer.history.client.zadd(scorer.history.prefix + b"poison-customer", {b"short": 1})
    # transactions delivered twice (a producer retry): each copy decided, with one score
    duplicated = list(new["transaction_id"].astype(str).iloc[[5, 6, 250]])
    # customers with a stored state: the warm start caches them, so no batch reads them
    customers = sorted(set(new["customer_id"].astype(str)))
    client = scorer.history.client
    unstored = [c for c in customers if not client.exists(scorer.history.prefix + c.encode())]
    assert 2 * len(unstored) + 2 < len(customers)  # so the read count below tells

    with socket.socket() as probe:  # a free port for the worker's metrics
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    env = process_env(
        settings,
        tmp_path / "stack",
        {
            "FRAUDSTREAM_TOPICS__TRANSACTIONS": topics["transactions"],
            "FRAUDSTREAM_TOPICS__DECISIONS": topics["decisions"],
            "FRAUDSTREAM_TOPICS__DEAD_LETTER": topics["dead_letter"],
            "FRAUDSTREAM_SCORING__BATCH_SIZE": str(BATCH_SIZE),
            "TEST_APP_ID": f"worker-{tag}",
            "FRAUDSTREAM_WORKER__METRICS_PORT": str(metrics_port),
        },
    )
    log = tmp_path / "worker.log"
    consumer = _consumer(settings, bootstrap, [topics["decisions"], topics["dead_letter"]])
    argv = [sys.executable, "-m", "fraudstream", "worker", "--app-id", env["TEST_APP_ID"]]
    with running(argv, log, env=env) as proc:

        def worker_log() -> str:
            return log.read_text()[-4000:]

        # message.max.bytes: let the oversized malformed message through (broker: ~1 MB)
        producer = Producer(
            {**producer_config(settings.kafka, bootstrap), "message.max.bytes": 2_000_000}
        )
        sent_valid = 0
        for i, event in enumerate(event_payloads(new)):
            key, value = encode(event)
            producer.produce(topics["transactions"], key=key, value=value)
            sent_valid += 1
            if event.transaction_id in duplicated:
                producer.produce(topics["transactions"], key=key, value=value)
            if i == N_VALID // 2:  # malformed messages in the middle of the stream
                for bad_key, bad_value, _ in MALFORMED:
                    producer.produce(topics["transactions"], key=bad_key, value=bad_value)
                [poison] = event_payloads(poisoned)
                producer.produce(topics["transactions"], key=b"poison", value=encode(poison)[1])
        assert producer.flush(15) == 0, "events not delivered to the transactions topic"
        assert sent_valid == N_VALID
        n_decisions, n_dead = N_VALID + len(duplicated), len(MALFORMED) + 1

        decisions: list[tuple[bytes | None, dict[str, Any]]] = []
        dead: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        dead_at: dict[bytes | None, str] = {}  # topic:partition:offset of each dead letter
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        complete_at: float | None = None
        try:
            while time.monotonic() < deadline:
                if complete_at is None and (len(decisions) >= n_decisions and len(dead) >= n_dead):
                    complete_at = time.monotonic()
                if complete_at is not None and time.monotonic() - complete_at > GRACE_S:
                    break
                assert proc.poll() is None, f"worker exited early:\n{worker_log()}"
                msg = consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                if msg.topic() == topics["decisions"]:
                    decisions.append((msg.key(), orjson.loads(msg.value())))
                else:
                    headers = {k: v for k, v in (msg.headers() or [])}
                    dead.append((msg.key(), msg.value(), headers))
                    dead_at[msg.key()] = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
        finally:
            consumer.close()

        assert len(decisions) == n_decisions and len(dead) == n_dead, (
            f"{len(decisions)} decision(s), {len(dead)} dead letter(s); log:\n{worker_log()}"
        )

        # one decision per message, keyed by its id, scored as in this process
        ids = [d["transaction_id"] for _, d in decisions]
        assert sorted(ids) == sorted([*expected, *duplicated])
        for key, d in decisions:
            want = expected[d["transaction_id"]]
            assert key == d["transaction_id"].encode()
            assert d["score"] == pytest.approx(want.score, abs=1e-6), (
                d["transaction_id"],
                d["reasons"],
                [r.model_dump() for r in want.reasons],
                d["event_time"],
                str(want.event_time),
            )
            assert d["action"] == want.action
            assert [r["feature"] for r in d["reasons"]] == [r.feature for r in want.reasons]
            assert d["model_version"] == want.model_version
            assert d["latency_ms"] is not None and 0 <= d["latency_ms"] < 120_000

        # each malformed message once, with its own key and bytes and a telling error
        by_key = {key: (value, headers) for key, value, headers in dead}
        assert len(by_key) == n_dead
        value, headers = by_key.pop(b"poison")
        assert headers["error_type"] == b"scoring_failed"
        assert orjson.loads(value)["transaction_id"] == "poisoned-1"
        error = headers["error"].decode()  # says what is wrong and which key to repair
        assert "CorruptStateError" in error and "history:poison-customer" in error, error
        for bad_key, bad_value, word in MALFORMED:
            value, headers = by_key[bad_key]
            if bad_key in CUT_TO_THE_HEAD:  # only the head of an oversized message
                assert value == bad_value[:DEAD_LETTER_MAX_VALUE_BYTES]
                assert headers["value_bytes"] == str(len(bad_value)).encode()
            else:
                assert value == bad_value
            error = headers["error"].decode()
            assert word in error, (bad_key, error)
            assert "Traceback" not in error
            assert headers["error_type"] == b"invalid_event"
            assert headers["source_topic"] == topics["transactions"].encode()
            assert int(headers["source_partition"]) in range(settings.kafka.partitions)
            assert int(headers["source_offset"]) >= 0

        # what the worker counted, on its metrics endpoint
        base = f"http://127.0.0.1:{metrics_port}"
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("fraudstream_worker_")
        }
        assert samples["fraudstream_worker_consumed_total"] == n_decisions + n_dead
        decided = sum(
            v for k, v in samples.items() if k.startswith("fraudstream_worker_decisions_total")
        )
        assert decided == n_decisions
        assert samples['fraudstream_worker_dead_letters_total{error_type="invalid_event"}'] == len(
            MALFORMED
        )
        assert samples['fraudstream_worker_dead_letters_total{error_type="scoring_failed"}'] == 1
        for stage in ("decode", "features", "model", "update", "produce", "batch"):
            assert samples[f'fraudstream_worker_stage_duration_ms_count{{stage="{stage}"}}'] > 0
        # warm start: every intact stored state was read before the first batch; the batches
        # read only the customers with none, and the corrupt one (left out, logged), which its
        # batch read and its one-by-one retry read again (with any stateless customer of
        # that batch: its failed read is counted too)
        text_log = log.read_text()
        warmed = re.search(r"caches warmed in [\d.]+ s: (\d+) terminals, (\d+) customers", text_log)
        assert warmed is not None, worker_log()
        assert int(warmed[2]) >= len(customers) - len(unstored)
        assert "not warmed" in text_log and "poison-customer" in text_log
        reads = samples["fraudstream_worker_history_reads_total"]
        assert len(unstored) + 2 <= reads <= 2 * len(unstored) + 2, (reads, len(unstored))
        live = json.loads(urllib.request.urlopen(f"{base}/live", timeout=5).read())
        assert live["live"] is True

        # the corrupt state repaired (deleted), ``redrive`` sends the dead-lettered event back
        # (only it: invalid events would fail again) and the worker decides it
        client.delete(scorer.history.prefix + b"poison-customer")
        [want] = scorer.score(poisoned, update=False).decisions
        out = run_cli(["redrive", "--group", f"redrive-{tag}"], env, tmp_path)
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["redriven"] == 1, summary
        assert summary["passed_over"] == {"invalid_event": len(MALFORMED)}, summary
        redecided = None
        redecided_headers: dict[str, bytes | None] = {}
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        for record in read_records(
            settings.kafka,
            bootstrap,
            topics["decisions"],
            from_beginning=True,
            follow=True,
            stop=lambda: time.monotonic() > deadline,
        ):
            if record.key == b"poisoned-1":
                redecided = orjson.loads(record.value or b"")
                redecided_headers = dict(record.headers)
                break
        assert redecided is not None, f"the redriven event was not decided:\n{worker_log()}"
        assert redecided["score"] == pytest.approx(want.score, abs=1e-6)
        assert redecided["action"] == want.action
        # its decision names the dead letter it came back from; the worker counted it
        assert redecided_headers == {"redriven_from": dead_at[b"poison"].encode()}
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "\nfraudstream_worker_redriven_total 1.0\n" in text
        assert f"\nfraudstream_worker_consumed_total {n_decisions + n_dead + 1}.0\n" in text

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not stop within 30s of SIGTERM:\n{worker_log()}")
        assert code == 0, f"worker exit code {code}:\n{worker_log()}"
