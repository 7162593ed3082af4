"""The model lifecycle end to end (issue 7): real Kafka, Redis and Feast, one worker process.

A simulated world whose fraud pattern changes on day :data:`CHANGE_DAY` (scenario 4, night
card testing, :func:`fraudstream.simulate.simulate`):

1. the champion is trained on days before the change and registered; Redis holds the
   customers' history and the terminal snapshot up to the change; the archive holds the
   transactions and labels before the change (what earlier runs archived);
2. the worker starts (``fraudstream worker``, the registry polled every 0.5 s) and phase 1,
   every transaction from the change to :data:`LABEL_DELAY_DAYS` days ago, flows through
   ``transactions`` and gets decisions;
3. labels arrive on the ``labels`` topic (each ``reported_at`` = the transaction's time + 7
   days, so only these phase-1 transactions have one by now) and ``fraudstream archive --once``
   archives the topics;
4. phase 2, the last days, starts flowing slowly (its last :data:`RESERVE` events slower
   still, so that it keeps flowing) while ``fraudstream retrain`` (reading the archive) trains a challenger on post-change days and
   evaluates both models on the same most recent labelled days: the challenger must beat the
   champion by the margin (asserted on the numbers) and is promoted;
5. once the worker says it switched, the rest of phase 2 flows at once;
6. the old champion is made the shadow, and :data:`SHADOW_EVENTS` more events flow: their
   decisions are the new champion's and carry the shadow's score and version. The same
   worker process kept running throughout.

Then: every transaction has exactly one decision (none lost, none scored twice), no dead
letter, the worker's pid never changed, and in each partition the decisions' model versions
switch exactly once, from the champion to the challenger, which decides the end of phase 2;
phase 2 has decisions of both models (it was flowing across the switch).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.chaos import WorkerProcess, publish
from benchmarks.small_world import private_feature_repo, process_env, run_cli
from fraudstream.archive import Archive, archive_root
from fraudstream.config import Settings
from fraudstream.feast_env import open_store, run_feast
from fraudstream.kafka import confluent_config, ensure_topics, producer_config
from fraudstream.labels import label_events, publish_labels
from fraudstream.publish import encode, event_payloads
from fraudstream.registry import ModelRegistry
from fraudstream.schema import validate_frame
from fraudstream.scoring import build_scorer
from fraudstream.simulate import simulate
from fraudstream.stack import resolve_endpoints
from training.backfill import backfill, refresh_terminal_snapshot
from training.evaluate import Split
from training.train import train

pytestmark = pytest.mark.e2e

DAYS = 42
CHANGE_DAY = 22
LABEL_DELAY_DAYS = 7
CUSTOMERS = 250
POLL_S = 0.5
TIMEOUT_S = 150.0
#: Phase 2's pace before the promotion, and how many of its events wait for the promotion.
TRICKLE_S = 0.01
SLOW_S = 0.2
RESERVE = 1000
SHADOW_EVENTS = 300


def read_decisions(settings: Settings, bootstrap: str, topic: str, expected: int) -> list[Any]:
    """Every record on ``topic`` (partition, offset, value), once ``expected`` have arrived
    and nothing more came for 2 s."""
    conf = confluent_config(settings.kafka, bootstrap)
    conf.update({"group.id": f"lifecycle-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    consumer = Consumer(conf)
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.partitions)]
    )
    out: list[tuple[int, int, dict[str, Any]]] = []
    deadline = time.monotonic() + TIMEOUT_S
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.2)
            for msg in batch:
                assert msg.error() is None, msg.error()
                value = msg.value()
                assert value is not None
                out.append((msg.partition() or 0, msg.offset() or 0, orjson.loads(value)))
            if len(out) >= expected:
                quiet_since = quiet_since or time.monotonic()
                if batch:
                    quiet_since = time.monotonic()
                if time.monotonic() - quiet_since > 2.0:
                    break
    finally:
        consumer.close()
    return out


def trickle(
    settings: Settings, bootstrap: str, events: pd.DataFrame, promoted: threading.Event
) -> None:
    """Publish ``events`` one every :data:`TRICKLE_S` until ``promoted`` is set, the last
    :data:`RESERVE` of them only one every :data:`SLOW_S` (the stream never stops, and the
    worker looks at the registry between batches); after ``promoted``, the rest at once."""
    producer = Producer(producer_config(settings.kafka, bootstrap))
    payloads = list(event_payloads(events))
    for i, event in enumerate(payloads):
        if not promoted.is_set():
            promoted.wait(TRICKLE_S if len(payloads) - i > RESERVE else SLOW_S)
        key, value = encode(event)
        producer.produce(settings.topics.transactions, key=key, value=value)
        producer.poll(0)
    assert producer.flush(60) == 0


def test_labels_retrain_promote_and_the_running_worker_switches_without_loss(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    began = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    topics = {
        "transactions": f"tx-life-{tag}",
        "decisions": f"decisions-life-{tag}",
        "dead_letter": f"tx-life-{tag}.dlq",
        "labels": f"labels-life-{tag}",
    }
    repo = private_feature_repo(tmp_path, "l")
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        redis={"url": redis_url},
        feast={"repo_path": repo},
        model={"dir": tmp_path / "model", "poll_interval_s": POLL_S},
        stack={"dir": tmp_path / "stack"},
        topics=topics,
        monitoring={"archive_dir": tmp_path / "archive", "archive_group_id": f"arch-{tag}"},
    )
    endpoints = resolve_endpoints(settings)
    ensure_topics(settings.kafka, kafka_bootstrap, list(topics.values()))

    # ---- the world before the change: champion, Redis, archive
    today = datetime.now(UTC).date()
    start = today - timedelta(days=DAYS)
    raw = simulate(
        customers=CUSTOMERS,
        terminals=2 * CUSTOMERS,
        days=DAYS,
        start=str(start),
        seed=5,
        pattern_change_day=CHANGE_DAY,
    )
    events = validate_frame(raw, keep=("is_fraud",))
    change = pd.Timestamp(start + timedelta(days=CHANGE_DAY), tz="UTC")
    now = pd.Timestamp.now(tz="UTC")
    labelled_until = now - pd.Timedelta(days=LABEL_DELAY_DAYS)
    before = events[events["timestamp"] < change].reset_index(drop=True)
    phase1 = events[(events["timestamp"] >= change) & (events["timestamp"] <= labelled_until)]
    phase2 = events[events["timestamp"] > labelled_until]
    assert len(phase1) > 4000 and len(phase2) > 2000

    backfill(before, repo)
    assert run_feast(settings, endpoints, ["apply"]) == 0
    store = open_store(settings, endpoints)
    train(before, Split(start + timedelta(days=1)), settings.model.dir, store, backfill_first=False)
    registry = ModelRegistry(settings.model.registry_path)
    champion = registry.register(settings.model.dir)
    refreshed_at = now.floor("s")
    refresh_terminal_snapshot(before, repo, refreshed_at)
    end = (refreshed_at + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert run_feast(settings, endpoints, ["materialize-incremental", end]) == 0
    build_scorer(settings, endpoints).history.append(before)
    archive = Archive(archive_root(settings))
    archive.append("transactions", before.drop(columns=["is_fraud"]))
    archive.append("labels", label_events(before, timedelta(days=LABEL_DELAY_DAYS)))
    setup_s = time.monotonic() - began

    # ---- the worker, and phase 1
    env = process_env(
        settings,
        tmp_path / "stack",
        {
            "FRAUDSTREAM_TOPICS__TRANSACTIONS": topics["transactions"],
            "FRAUDSTREAM_TOPICS__DECISIONS": topics["decisions"],
            "FRAUDSTREAM_TOPICS__DEAD_LETTER": topics["dead_letter"],
            "FRAUDSTREAM_TOPICS__LABELS": topics["labels"],
            "FRAUDSTREAM_MODEL__POLL_INTERVAL_S": str(POLL_S),
            "FRAUDSTREAM_MONITORING__ARCHIVE_DIR": str(tmp_path / "archive"),
            "FRAUDSTREAM_MONITORING__ARCHIVE_GROUP_ID": f"arch-{tag}",
        },
    )
    worker = WorkerProcess(env, f"worker-life-{tag}", tmp_path / "logs")
    worker.start()
    try:
        assert worker.proc is not None
        pid = worker.proc.pid
        publish(settings, kafka_bootstrap, topics["transactions"], phase1, [], seed=1)
        first = read_decisions(settings, kafka_bootstrap, topics["decisions"], len(phase1))
        assert len(first) == len(phase1), worker.tail()
        assert {r["model_version"] for _, _, r in first} == {champion}

        # ---- labels arrive, are archived; retrain, promote
        labels = label_events(phase1, timedelta(days=LABEL_DELAY_DAYS))
        assert (labels["reported_at"] <= now).all()  # every phase-1 verdict is in by now
        sent = publish_labels(
            labels, kafka=settings.kafka, bootstrap=kafka_bootstrap, topic=topics["labels"]
        )
        assert sent.delivered == len(phase1) and sent.failed == 0
        run_cli(["archive", "--once"], env, tmp_path)
        # phase 2 starts flowing now, slowly, and keeps flowing until the switch
        promoted = threading.Event()
        stream = threading.Thread(
            target=trickle, args=(settings, kafka_bootstrap, phase2, promoted), daemon=True
        )
        stream.start()
        out = run_cli(
            ["retrain", "--train-days", "6", "--delay-days", "1", "--eval-days", "6"],
            env,
            tmp_path,
        )
        evaluation = json.loads(out.strip().splitlines()[-1])
        challenger = evaluation["challenger_version"]
        old, new = evaluation["champion"], evaluation["challenger"]
        print("retrain evaluation:", json.dumps(evaluation, indent=1))
        assert old["model_version"] == champion and new["model_version"] == challenger
        assert old["n"] == new["n"] > 1000 and old["n_fraud"] == new["n_fraud"] > 20
        assert new["average_precision"] >= old["average_precision"] + 0.01
        assert new["auc_roc"] >= old["auc_roc"] - 0.005
        assert pd.Timestamp(evaluation["window"]["train_start"], tz="UTC") >= change
        assert evaluation["promoted"] is True and registry.champion() == challenger
        saved = json.loads((registry.path(challenger) / "retrain.json").read_text())
        assert saved["challenger"] == new
        # the comparison's rows and features are the challenger's own test week in training
        own = registry.manifest(challenger)["metrics"]["test"]
        for key in ("auc_roc", "average_precision", "n", "n_fraud"):
            assert own[key] == pytest.approx(new[key], abs=1e-9), key

        # ---- the worker switches while phase 2 trickles; then the rest of phase 2 flows
        switch_deadline = time.monotonic() + 20 * POLL_S
        while f"now serving model {challenger}" not in worker.tail(1_000_000):
            assert time.monotonic() < switch_deadline, worker.tail()
            time.sleep(0.1)
        assert stream.is_alive()  # phase 2 was still flowing when the worker switched
        promoted.set()
        stream.join(timeout=60)
        assert not stream.is_alive()
        expected = len(phase1) + len(phase2)
        records = read_decisions(settings, kafka_bootstrap, topics["decisions"], expected)

        # ---- a shadow: the old champion scores beside the new one, never acting
        registry.set_shadow(champion)
        phase3 = phase2.tail(SHADOW_EVENTS).reset_index(drop=True)
        phase3["transaction_id"] = [f"shadow-{i}" for i in range(len(phase3))]
        phase3["timestamp"] = pd.Timestamp.now(tz="UTC").floor("s") + pd.to_timedelta(
            [10 * i for i in range(len(phase3))], unit="ms"
        )
        publish(settings, kafka_bootstrap, topics["transactions"], phase3, [], seed=3)
        expected += len(phase3)
        records = read_decisions(settings, kafka_bootstrap, topics["decisions"], expected)
        assert worker.alive() and worker.proc.pid == pid and worker.starts == 1
    finally:
        code = worker.terminate()
    log = worker.tail(1_000_000)
    assert code == 0, log[-4000:]
    assert f"now serving model {challenger}" in log

    # ---- exactly once, and one switch per partition, old then new
    ids = [r["transaction_id"] for _, _, r in records]
    assert len(ids) == len(set(ids)) == expected
    phases = (phase1, phase2, phase3)
    assert set(ids) == set().union(*(set(p["transaction_id"]) for p in phases))
    shadowed = [r for _, _, r in records if r["transaction_id"].startswith("shadow-")]
    assert len(shadowed) == SHADOW_EVENTS
    for r in shadowed:
        assert (r["model_version"], r["shadow_model_version"]) == (challenger, champion)
        assert 0 <= r["shadow_score"] <= 1
    assert any(abs(r["shadow_score"] - r["score"]) > 1e-3 for r in shadowed)
    unshadowed = [r for _, _, r in records if not r["transaction_id"].startswith("shadow-")]
    assert {(r["shadow_score"], r["shadow_model_version"]) for r in unshadowed} == {(None, None)}
    dead = read_decisions(settings, kafka_bootstrap, topics["dead_letter"], 0)
    assert dead == []
    by_partition: dict[int, list[str]] = {}
    for partition, _, record in sorted(records, key=lambda r: (r[0], r[1])):
        by_partition.setdefault(partition, []).append(record["model_version"])
    for partition, versions in by_partition.items():
        switches = [i for i in range(1, len(versions)) if versions[i] != versions[i - 1]]
        assert versions[0] == champion and versions[-1] == challenger, partition
        assert len(switches) == 1, (partition, switches)
    phase2_ids = set(phase2["transaction_id"])
    late = [r for _, _, r in records if r["transaction_id"] in phase2_ids]
    new_share = sum(r["model_version"] == challenger for r in late) / len(late)
    assert 0 < new_share < 1  # phase 2 was flowing across the switch
    print(
        f"lifecycle: setup {setup_s:.0f}s, total {time.monotonic() - began:.0f}s; "
        f"phase 1 {len(phase1)}, phase 2 {len(phase2)} events ({new_share:.1%} by the "
        f"challenger); champion AP {old['average_precision']:.4f} AUC {old['auc_roc']:.4f}, "
        f"challenger AP {new['average_precision']:.4f} AUC {new['auc_roc']:.4f}"
    )
