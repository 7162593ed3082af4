"""``fraudstream archive`` on the real broker: every message of the transactions, decisions and
labels topics lands in the archive once (after deduplication), bad ones in ``rejected`` with
their bytes and reason; offsets are committed after the write, so a second run of the same
group archives only what is new, and a re-run from scratch changes nothing after dedup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer

from benchmarks.small_world import ROOT
from fraudstream.archive import Archive, labelled_transactions, run_archive
from fraudstream.config import Settings
from fraudstream.decision import Decision
from fraudstream.kafka import producer_config
from fraudstream.labels import LabelEvent
from fraudstream.publish import encode, event_payloads
from fraudstream.schema import validate_frame
from fraudstream.stack import running

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 10, tzinfo=UTC)


def _events(n: int, first: int = 0) -> pd.DataFrame:
    return validate_frame(
        pd.DataFrame(
            {
                "transaction_id": [f"tx-{i}" for i in range(first, first + n)],
                "timestamp": [T0 + timedelta(minutes=i) for i in range(first, first + n)],
                "customer_id": [f"c{i % 7}" for i in range(first, first + n)],
                "terminal_id": [f"t{i % 5}" for i in range(first, first + n)],
                "amount": [5.0 + i for i in range(first, first + n)],
            }
        )
    )


def _decision(event_id: str, i: int, base: datetime = T0) -> bytes:
    decision = Decision(
        transaction_id=event_id,
        customer_id="c",
        terminal_id="t",
        amount=1.0 + i,
        event_time=base + timedelta(minutes=i),
        score=0.5,
        action="review",
        model_version="m1",
        reasons=[{"feature": "amount", "value": 1.0, "contribution": 0.2}],
        features_age_s=3.0,
        degraded=False,
        decided_at=base + timedelta(minutes=i, seconds=1),
    )
    return orjson.dumps(decision.to_json_dict())


def _label(event_id: str, label: int, days: int) -> bytes:
    reported_at = (T0 + timedelta(days=days)).isoformat()
    event = LabelEvent.model_validate(
        {"transaction_id": event_id, "label": label, "reported_at": reported_at}
    )
    return orjson.dumps(event.to_json_dict())


def _send(settings: Settings, bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(producer_config(settings.kafka, bootstrap))
    for key, value in items:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_archive_consumer_once_commits_after_write(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[str], str],
) -> None:
    topics = {
        "transactions": topic_factory("tx", partitions=2),
        "decisions": topic_factory("dec", partitions=2),
        "labels": topic_factory("lab", partitions=2),
        "dead_letter": topic_factory("dlq"),
    }
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 2},
        topics=topics,
        monitoring={"archive_dir": tmp_path / "archive", "archive_group_id": group_factory("a")},
    )
    events = _events(40)
    _send(
        settings,
        kafka_bootstrap,
        topics["transactions"],
        [encode(e) for e in event_payloads(events)],
    )
    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    far = {"transaction_id": "far", "timestamp": ahead, "customer_id": "c", "terminal_id": "t"}
    bad = [
        (b"k1", b"{not json"),
        (b"k2", b'{"transaction_id": "x", "amount": 3}'),
        (b"k3", orjson.dumps({**far, "amount": 3.0})),  # valid, but the worker refuses it
    ]
    _send(settings, kafka_bootstrap, topics["transactions"], bad)
    ids = events["transaction_id"].tolist()
    _send(
        settings,
        kafka_bootstrap,
        topics["decisions"],
        [(i.encode(), _decision(i, n)) for n, i in enumerate(ids)]
        + [(ids[0].encode(), _decision(ids[0], 0))],  # a replayed decision
    )
    _send(
        settings,
        kafka_bootstrap,
        topics["labels"],
        [(i.encode(), _label(i, int(n % 10 == 0), 7)) for n, i in enumerate(ids[:20])]
        + [(ids[1].encode(), _label(ids[1], 1, 9)), (b"z", b'{"transaction_id": "z", "label": 2}')],
    )
    archive = Archive(settings.monitoring.archive_dir)  # type: ignore[arg-type]

    first = run_archive(settings, kafka_bootstrap, archive, once=True)
    assert first.messages == 43 + 41 + 22
    assert dict(first.rows) == {"transactions": 40, "decisions": 41, "labels": 21, "rejected": 4}
    assert archive.read("transactions")["transaction_id"].tolist() == ids
    assert len(archive.read("decisions")) == 40
    labels = archive.read("labels").set_index("transaction_id")["label"]
    assert len(labels) == 20 and labels[ids[1]] == 1  # the later report wins
    rejected = archive.read("rejected")
    assert sorted(rejected["value"].tolist()) == sorted(
        [v for _, v in bad] + [b'{"transaction_id": "z", "label": 2}']
    )
    reasons = " ".join(rejected["reason"])
    assert "timestamp" in reasons and "label" in reasons and "message" in reasons
    # the worker's own words for the event timed ahead (decode_event), its clock the message's
    assert "is more than 24 h after its Kafka timestamp" in reasons
    joined = labelled_transactions(archive)
    assert len(joined) == 20 and joined["is_fraud"].sum() == 3

    # committed: the same group archives only the new messages
    more = _events(5, first=40)
    _send(
        settings, kafka_bootstrap, topics["transactions"], [encode(e) for e in event_payloads(more)]
    )
    second = run_archive(settings, kafka_bootstrap, archive, once=True)
    assert second.messages == 5 and dict(second.rows) == {"transactions": 5}
    assert len(archive.read("transactions")) == 45

    # the CLI with a new group re-reads everything: duplicates on disk, none after read()
    env = {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(ROOT),
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_KAFKA__PARTITIONS": "2",
        **{f"FRAUDSTREAM_TOPICS__{k.upper()}": v for k, v in topics.items()},
        "FRAUDSTREAM_MONITORING__ARCHIVE_DIR": str(settings.monitoring.archive_dir),
        "FRAUDSTREAM_MONITORING__ARCHIVE_GROUP_ID": group_factory("b"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream", "archive", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["messages"] == 43 + 41 + 22 + 5
    assert len(archive.read("transactions", dedup=False)) == 90
    assert len(archive.read("transactions")) == 45
    assert len(archive.read("decisions")) == 40


def test_archive_follows_serves_live_quality_and_stops_on_sigterm(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[str], str],
) -> None:
    topics = {
        "transactions": topic_factory("tx"),
        "decisions": topic_factory("dec"),
        "labels": topic_factory("lab"),
        "dead_letter": topic_factory("dlq"),
    }
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 1}, topics=topics
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(ROOT),
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_KAFKA__PARTITIONS": "1",
        **{f"FRAUDSTREAM_TOPICS__{k.upper()}": v for k, v in topics.items()},
        "FRAUDSTREAM_MONITORING__ARCHIVE_DIR": str(tmp_path / "archive"),
        "FRAUDSTREAM_MONITORING__ARCHIVE_GROUP_ID": group_factory("f"),
        "FRAUDSTREAM_MONITORING__QUALITY_INTERVAL_S": "0.2",
    }
    # 10 decisions of one day 8 days ago: 4 declines (frauds: the first 2), then approvals
    day = (datetime.now(UTC) - timedelta(days=8)).replace(hour=0, minute=0, second=0, microsecond=0)
    ids = [f"q-{i}" for i in range(10)]
    decisions = []
    for i, tx in enumerate(ids):
        record = orjson.loads(_decision(tx, i, day))
        record["action"] = "decline" if i < 4 else "approve"
        decisions.append((tx.encode(), orjson.dumps(record)))
    log = tmp_path / "archive.log"
    argv = [sys.executable, "-m", "fraudstream", "archive", "--metrics-port", str(port)]
    with running(argv, log, env=env) as proc:
        _send(settings, kafka_bootstrap, topics["decisions"], decisions)
        _send(
            settings,
            kafka_bootstrap,
            topics["labels"],
            [(tx.encode(), _label(tx, int(i < 2), 7)) for i, tx in enumerate(ids)],
        )
        want = f'fraudstream_quality_precision{{action="decline",day="{day:%Y-%m-%d}"}} 0.5'
        deadline = time.monotonic() + 60
        text = ""
        while want not in text and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
            try:
                text = (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    .read()
                    .decode()
                )
            except OSError:
                continue
        assert want in text, text[-2000:] + log.read_text()[-2000:]
        assert 'fraudstream_archive_rows_total{kind="decisions"} 10.0' in text
        assert f'fraudstream_quality_recall{{day="{day:%Y-%m-%d}"}} 1.0' in text
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    summary = json.loads(log.read_text().strip().splitlines()[-1])
    assert summary["messages"] == 20
    assert len(Archive(tmp_path / "archive").read("labels")) == 10


class _FailingArchive(Archive):
    """An archive whose disk fails on the ``fail_at``-th append."""

    def __init__(self, root: Path, fail_at: int) -> None:
        super().__init__(root)
        self.appends, self.fail_at = 0, fail_at

    def append(self, kind: str, frame: pd.DataFrame) -> Path:
        self.appends += 1
        if self.appends == self.fail_at:
            raise OSError("disk full")
        return super().append(kind, frame)


def test_a_failed_write_is_not_committed_so_nothing_is_lost(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[str], str],
) -> None:
    topics = {
        "transactions": topic_factory("tx"),
        "decisions": topic_factory("dec"),
        "labels": topic_factory("lab"),
    }
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 1},
        topics=topics,
        monitoring={"archive_group_id": group_factory("crash"), "archive_max_batch": 10},
    )
    events = _events(50)
    _send(
        settings,
        kafka_bootstrap,
        topics["transactions"],
        [encode(e) for e in event_payloads(events)],
    )
    failing = _FailingArchive(tmp_path, fail_at=3)
    with pytest.raises(OSError, match="disk full"):
        run_archive(settings, kafka_bootstrap, failing, once=True)
    written = len(failing.read("transactions"))
    assert 0 < written < 50  # two batches written and committed, the third failed

    again = run_archive(settings, kafka_bootstrap, Archive(tmp_path), once=True)
    assert again.messages == 50 - written  # resumed at the last commit: the failed batch too
    assert Archive(tmp_path).read("transactions")["transaction_id"].tolist() == (
        events["transaction_id"].tolist()
    )
