"""Publishing events and reading topics back, on the real broker (library and CLI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest

from fraudstream.consume import Record, format_record, read_records
from fraudstream.publish import publish_events, publish_simulated
from fraudstream.schema import TransactionEvent, validate_frame
from fraudstream.simulate import simulate

from .kafka_io import KAFKA, produce_raw, read_all

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    """About 600 labelled events of 100 customers over three days."""
    raw = simulate(customers=100, terminals=200, days=3, start="2024-01-01", seed=7)
    return validate_frame(raw, keep=("is_fraud", "fraud_scenario"))


def test_table_yields_exactly_its_events_keyed_and_ordered_per_customer(
    kafka_bootstrap: str, topic_factory: Callable[..., str], events: pd.DataFrame, tmp_path: Path
) -> None:
    topic = topic_factory("tx", partitions=3)
    before_ms = int(time.time() * 1000)
    result = publish_events(
        events,
        kafka=KAFKA,
        bootstrap=kafka_bootstrap,
        topic=topic,
        labels_out=tmp_path / "labels.parquet",
    )
    after_ms = int(time.time() * 1000)
    summary = result.summary()
    assert summary["sent"] == summary["delivered"] == len(events)
    assert summary["failed"] == 0

    records = read_all(kafka_bootstrap, topic)
    assert len(records) == len(events)
    by_id = {}
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for record in records:
        data = orjson.loads(record.value or b"")
        assert "is_fraud" not in data and "fraud_scenario" not in data
        event = TransactionEvent.model_validate(data)
        assert record.key == event.customer_id.encode()
        assert before_ms <= (record.timestamp_ms or 0) <= after_ms  # the send time
        by_id[event.transaction_id] = (record, event)
        partitions_of[event.customer_id].add(record.partition)
    assert set(by_id) == set(events["transaction_id"])
    assert all(len(p) == 1 for p in partitions_of.values())  # a customer stays in a partition

    # Per customer, offsets follow the table's order; the table's events arrive unchanged.
    for customer, rows in events.groupby("customer_id", sort=False):
        offsets = [by_id[tx][0].offset for tx in rows["transaction_id"]]
        assert offsets == sorted(offsets), customer
    first = events.iloc[0]
    sent = by_id[first["transaction_id"]][1]
    assert sent.timestamp == first["timestamp"].to_pydatetime()
    assert sent.amount == first["amount"] and sent.terminal_id == first["terminal_id"]

    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert list(labels["transaction_id"]) == list(events["transaction_id"])
    assert list(labels["is_fraud"]) == list(events["is_fraud"])


def test_rate_is_respected(
    kafka_bootstrap: str, topic_factory: Callable[..., str], events: pd.DataFrame
) -> None:
    topic = topic_factory("tx-rate")
    result = publish_events(
        events, kafka=KAFKA, bootstrap=kafka_bootstrap, topic=topic, rate=400, limit=200
    )
    assert result.sent == result.delivered == 200
    # 200 events at 400/s: the last is due 199/400 = 0.4975 s after the first.
    assert 0.45 <= result.seconds < 3.0
    stamps = [r.timestamp_ms or 0 for r in read_all(kafka_bootstrap, topic)]
    assert len(stamps) == 200
    assert max(stamps) - min(stamps) >= 450


def test_simulated_events_are_stamped_now(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("tx-sim", partitions=2)
    result = publish_simulated(
        60,
        kafka=KAFKA,
        bootstrap=kafka_bootstrap,
        topic=topic,
        rate=300,
        seed=3,
        customers=200,
        terminals=400,
        labels_out=tmp_path / "labels.parquet",
    )
    assert result.delivered == 60
    now = datetime.now(UTC)
    records = read_all(kafka_bootstrap, topic)
    assert len(records) == 60
    ids = set()
    for record in records:
        event = TransactionEvent.model_validate_json(record.value or b"")
        # Event time is the send time: equal to the message timestamp, close to now.
        assert int(event.timestamp.timestamp() * 1000) == record.timestamp_ms
        assert 0 <= (now - event.timestamp).total_seconds() < 30
        assert event.transaction_id.startswith("sim3-")
        ids.add(event.transaction_id)
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert set(labels["transaction_id"]) == ids
    assert set(labels["is_fraud"]) <= {0, 1}


def test_reader_returns_exactly_what_was_written_and_survives_bad_bytes(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("dlq")
    bad = b"\xff\xfe{not json"
    produce_raw(
        kafka_bootstrap,
        topic,
        [
            (b"c1", b'{"decision": "approve", "n": 1}', []),
            (b"\xc3\x28", bad, [("error", b"invalid event"), ("raw", b"\x00\xff")]),
            (None, b'{"decision": "block", "n": 3}', [("error", b"a"), ("error", b"b")]),
            (b"c4", b"[1, 2]", []),
        ],
    )
    records = read_all(kafka_bootstrap, topic, limit=3)
    assert [r.offset for r in records] == [0, 1, 2]
    assert format_record(records[0]) == {"decision": "approve", "n": 1}
    broken = format_record(records[1])
    assert broken["value_base64"] == "//57bm90IGpzb24="
    assert broken["error"].startswith("not JSON")
    assert broken["key"] == {"base64": "wyg="}
    assert broken["headers"] == {"error": "invalid event", "raw": {"base64": "AP8="}}
    wrapped = format_record(records[2], metadata=True)
    assert wrapped["value"] == {"decision": "block", "n": 3}
    assert wrapped["headers"] == {"error": ["a", "b"]}
    assert wrapped["key"] is None and wrapped["topic"] == topic and wrapped["offset"] == 2
    # Without a limit, from the beginning: everything there, then stop.
    assert len(read_all(kafka_bootstrap, topic)) == 4


def test_reader_without_from_beginning_sees_only_new_records(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("decisions", partitions=2)
    # Several old records in one batch: the local broker's "latest offset" points into it.
    produce_raw(kafka_bootstrap, topic, [(b"old", b'{"old": true}', [])] * 5)
    ready = threading.Event()
    got: list[Record] = []

    def reader() -> None:
        got.extend(
            read_records(KAFKA, kafka_bootstrap, topic, limit=2, follow=True, on_ready=ready.set)
        )

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert ready.wait(30)
    produce_raw(
        kafka_bootstrap,
        topic,
        [(b"k1", b'{"new": 1}', []), (b"k2", b'{"new": 2}', [])],
    )
    thread.join(30)
    assert not thread.is_alive()
    assert sorted(orjson.loads(r.value or b"")["new"] for r in got) == [1, 2]


# --- the CLI, end to end -------------------------------------------------------------


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def cli_env(kafka_bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FRAUDSTREAM_")}
    env["FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS"] = kafka_bootstrap
    env["FRAUDSTREAM_LOG_LEVEL"] = "WARNING"
    return env


def test_cli_publish_table_then_read_it_back(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    cli_env: dict[str, str],
    events: pd.DataFrame,
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.parquet"
    events.to_parquet(path, index=False)
    topic = unique_name("cli-tx")  # does not exist yet: publish creates it
    env = {**cli_env, "FRAUDSTREAM_TOPICS__TRANSACTIONS": topic}
    run = cli(
        [
            "publish", "--transactions", str(path), "--rate", "500", "--limit", "100",
            "--labels-out", str(tmp_path / "labels.parquet"),
        ],
        env,
        tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert summary["sent"] == summary["delivered"] == 100
    assert summary["failed"] == 0 and summary["topic"] == topic
    assert summary["seconds"] >= 0.19  # 100 at 500/s
    assert len(pd.read_parquet(tmp_path / "labels.parquet")) == 100

    # The transactions topic read through `decisions` pointed at it: the same 100 events.
    env["FRAUDSTREAM_TOPICS__DECISIONS"] = topic
    run = cli(["decisions", "--from-beginning"], env, tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 100
    assert {line["transaction_id"] for line in lines} == set(events["transaction_id"][:100])


def test_cli_publish_simulate(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    topic = topic_factory("cli-sim", partitions=2)
    env = {**cli_env, "FRAUDSTREAM_TOPICS__TRANSACTIONS": topic}
    run = cli(
        ["publish", "--simulate", "--rate", "200", "--count", "50", "--seed", "1",
         "--labels-out", str(tmp_path / "labels.parquet")],
        env,
        tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert summary["delivered"] == 50 and summary["seconds"] >= 0.2
    records = read_all(kafka_bootstrap, topic)
    assert len(records) == 50
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    sent = {TransactionEvent.model_validate_json(r.value or b"").transaction_id for r in records}
    assert sent == set(labels["transaction_id"])


def test_cli_decisions_and_dlq_print_json_lines(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    decisions = topic_factory("cli-decisions", partitions=2)
    dlq = topic_factory("cli-dlq")
    produce_raw(
        kafka_bootstrap,
        decisions,
        [(f"c{i}".encode(), orjson.dumps({"transaction_id": str(i), "score": i / 10}), [])
         for i in range(5)],
    )  # fmt: skip
    produce_raw(
        kafka_bootstrap,
        dlq,
        [
            (b"c9", b"\x00\x01 garbage", [("error", b"not JSON")]),
            (b"c8", b'{"amount": -1}', [("error", b"amount: must be > 0")]),
        ],
    )
    env = {
        **cli_env,
        "FRAUDSTREAM_TOPICS__DECISIONS": decisions,
        "FRAUDSTREAM_TOPICS__DEAD_LETTER": dlq,
    }
    run = cli(["decisions", "--from-beginning", "--limit", "3"], env, tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 3 and all("score" in line for line in lines)

    run = cli(["dlq", "--from-beginning"], env, tmp_path)
    assert run.returncode == 0, run.stderr
    garbage, invalid = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert garbage["value_base64"] == "AAEgZ2FyYmFnZQ==" and "error" in garbage
    assert garbage["headers"] == {"error": "not JSON"} and garbage["key"] == "c9"
    assert invalid["value"] == {"amount": -1}
    assert invalid["headers"] == {"error": "amount: must be > 0"}

    # Only new records: none arrive, so it stops after --wait idle seconds.
    started = time.monotonic()
    run = cli(["dlq", "--wait", "0.5"], env, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    assert time.monotonic() - started < CLI_TIMEOUT_S


def test_cli_dlq_prints_only_the_error_types_asked_for(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    dlq = topic_factory("cli-dlq", partitions=2)
    kinds = ["invalid_event", "scoring_failed", "invalid_event", "worker_error", "scoring_failed"]
    produce_raw(
        kafka_bootstrap,
        dlq,
        [(f"c{i}".encode(), orjson.dumps({"i": i}), [("error_type", kind.encode())])
         for i, kind in enumerate(kinds)] + [(b"c9", b"{}", [])],
    )  # fmt: skip
    env = {**cli_env, "FRAUDSTREAM_TOPICS__DEAD_LETTER": dlq}

    def printed(*args: str) -> list[int]:
        run = cli(["dlq", "--from-beginning", *args], env, tmp_path)
        assert run.returncode == 0, run.stderr
        return sorted(orjson.loads(line)["value"].get("i", -1) for line in run.stdout.splitlines())

    assert printed() == [-1, 0, 1, 2, 3, 4]
    assert printed("--error-type", "scoring_failed") == [1, 4]
    assert printed("--error-type", "scoring_failed", "--error-type", "worker_error") == [1, 3, 4]
    [one] = printed("--error-type", "invalid_event", "--limit", "1")  # counts what it prints
    assert one in (0, 2)
    assert printed("--error-type", "invalid_event", "--limit", "0") == []
    run = cli(["dlq", "--error-type", "scoring-failed"], env, tmp_path)
    assert run.returncode == 2 and "scoring-failed" in run.stderr


def test_cli_publish_rejects_bad_arguments(cli_env: dict[str, str], tmp_path: Path) -> None:
    run = cli(["publish"], cli_env, tmp_path)
    assert run.returncode == 2 and "exactly one of" in run.stderr
    run = cli(["publish", "--simulate", "--rate", "10"], cli_env, tmp_path)
    assert run.returncode == 2 and "--count" in run.stderr
    missing = {**cli_env, "FRAUDSTREAM_TOPICS__DECISIONS": "no-such-topic-ever-fraudstream"}
    run = cli(["decisions", "--from-beginning"], missing, tmp_path)
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_cli_ctrl_c_stops_publish_and_follow_cleanly(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    topic = topic_factory("cli-int")
    env = {
        **cli_env,
        "FRAUDSTREAM_TOPICS__TRANSACTIONS": topic,
        "FRAUDSTREAM_TOPICS__DECISIONS": topic,
    }
    argv = [sys.executable, "-m", "fraudstream"]
    follower = subprocess.Popen(
        [*argv, "decisions", "--follow", "--from-beginning"], env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    publisher = subprocess.Popen(
        [*argv, "publish", "--simulate", "--rate", "100", "--count", "2000",
         "--customers", "500", "--terminals", "1000",
         "--labels-out", str(tmp_path / "labels.parquet")],
        env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(5.0)  # start-up and simulation take ~2 s; 2,000 at 100/s take 20 s
        publisher.send_signal(signal.SIGINT)
        out, err = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, err
        summary = orjson.loads(out.strip().splitlines()[-1])
        assert summary["interrupted"] is True
        assert 0 < summary["sent"] < 2000
        assert summary["delivered"] == summary["sent"] and summary["failed"] == 0
        assert len(pd.read_parquet(tmp_path / "labels.parquet")) == summary["sent"]
        assert len(read_all(kafka_bootstrap, topic)) == summary["sent"]

        time.sleep(1.0)
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        assert len(out.splitlines()) == summary["sent"]
    finally:
        for proc in (publisher, follower):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
