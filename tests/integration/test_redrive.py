"""``fraudstream redrive`` on the real broker: dead letters the worker wrote (its own
``dead_letter`` function) go back to the transactions topic, each once per group.

The worker end to end (a corrupt state dead-lettered, repaired, redriven, decided) is in
``test_worker.py``.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fraudstream.dead_letters import INVALID_EVENT, REDRIVEN_FROM, SCORING_FAILED, WORKER_ERROR
from fraudstream.redrive import RedriveError, redrive
from fraudstream.schema import MAX_MESSAGE_BYTES
from streaming.worker import Incoming, dead_letter

from .kafka_io import KAFKA, produce_raw, read_all

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120


def _event(i: int, customer: str) -> bytes:
    return (
        f'{{"transaction_id":"tx-{i}","timestamp":"2026-11-21T10:{i % 60:02d}:00Z",'
        f'"customer_id":"{customer}","terminal_id":"t-{i}","amount":{i + 1}}}'
    ).encode()


def _dead_letters(source: str, dlq: str) -> list[tuple[bytes | None, bytes, list, str]]:
    """(key, value, headers, error_type) of a worker's dead letters: 6 scoring failures of
    3 customers, 2 of a failed batch, 2 invalid events and 1 oversized (invalid) message."""
    made = []

    def add(i: int, key: bytes | None, value: bytes, error_type: str) -> None:
        message = Incoming(source, i % 3, i, 1_700_000_000.0, key, value)
        out = dead_letter(message, f"{error_type}: test", error_type, dlq)
        assert out.value is not None
        made.append((out.key, out.value, out.headers, error_type))

    for i in range(6):
        customer = f"c{i % 3}"
        add(i, customer.encode(), _event(i, customer), SCORING_FAILED)
    add(6, b"c0", _event(6, "c0"), WORKER_ERROR)
    add(7, b"c9", _event(7, "c9"), WORKER_ERROR)
    add(8, b"bad", b'{"transaction_id": "x", ', INVALID_EVENT)
    add(9, b"c1", _event(9, "c1").replace(b"2026", b"2126"), INVALID_EVENT)
    add(10, b"huge", b'{"pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}', INVALID_EVENT)
    return made


DeadLetters = list[tuple[bytes | None, bytes, list, str]]


@pytest.fixture
def dead_letter_topics(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[str], str],
) -> Callable[..., tuple[str, str, DeadLetters, str]]:
    """``(source, dlq, made, group)``: new topics, the first ``count`` of
    :func:`_dead_letters` on ``dlq`` (unless ``produce`` is false), a new group."""

    def make(
        count: int | None = None, *, partitions: tuple[int, int] = (1, 1), produce: bool = True
    ) -> tuple[str, str, DeadLetters, str]:
        source = topic_factory("tx", partitions=partitions[0])
        dlq = topic_factory("dlq", partitions=partitions[1])
        made = _dead_letters(source, dlq)[:count]
        if produce:
            produce_raw(kafka_bootstrap, dlq, [(k, v, h) for k, v, h, _ in made])
        return source, dlq, made, group_factory("redrive")

    return make


def test_redrive_sends_each_recoverable_dead_letter_once(
    kafka_bootstrap: str,
    dead_letter_topics: Callable[..., tuple[str, str, DeadLetters, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, dlq, made, group = dead_letter_topics(partitions=(3, 2))

    dry = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group, dry_run=True)
    assert (dry.read, dry.redriven, dry.committed, dry.complete) == (11, 8, {}, True)
    assert dry.passed_over == {INVALID_EVENT: 3}
    assert read_all(kafka_bootstrap, source) == []

    with caplog.at_level(logging.INFO, logger="fraudstream.redrive"):  # after the dry run
        first = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group, checkpoint_every=4)
    assert (first.read, first.redriven) == (11, 8)
    assert sum(first.committed.values()) == 11  # past every dead letter it read
    commits = [
        re.fullmatch(r"redrive: committed (\{.*\}) \((\d+) read\)", r.getMessage())
        for r in caplog.records
    ]
    # every 4 read, and at the end: each commit past exactly what had been read
    assert [(sum(ast.literal_eval(c[1]).values()), int(c[2])) for c in commits if c] == [
        (4, 4),
        (8, 8),
        (11, 11),
    ]
    sent = read_all(kafka_bootstrap, source)
    assert len(sent) == 8
    recoverable = [(k, v) for k, v, _, t in made if t != INVALID_EVENT]
    assert sorted((r.key, r.value) for r in sent) == sorted(recoverable)  # bytes unchanged
    partition_of: dict[bytes | None, int] = {}
    for record in sent:  # one partition per key (the producer's): a customer keeps its order
        assert partition_of.setdefault(record.key, record.partition) == record.partition
        [(name, origin)] = record.headers
        assert name == REDRIVEN_FROM and origin is not None
        topic, partition, offset = origin.decode().rsplit(":", 2)
        assert topic == dlq and int(partition) in (0, 1) and int(offset) >= 0
    by_customer = [r.value for r in sorted(sent, key=lambda r: r.offset) if r.key == b"c0"]
    assert by_customer == [v for k, v in recoverable if k == b"c0"]

    again = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group)
    assert (again.read, again.redriven, again.committed) == (0, 0, {})
    # a new dead letter: only it goes; then, from the beginning, the invalid ones too
    produce_raw(kafka_bootstrap, dlq, [(k, v, h) for k, v, h, _ in made[:1]])
    newer = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group)
    assert (newer.read, newer.redriven) == (1, 1)
    everything = redrive(
        KAFKA,
        kafka_bootstrap,
        dlq,
        source,
        group_id=group,
        from_beginning=True,
        error_types=[INVALID_EVENT],
    )
    assert (everything.read, everything.redriven) == (12, 2)
    assert everything.passed_over == {SCORING_FAILED: 7, WORKER_ERROR: 2, "truncated": 1}
    assert len(read_all(kafka_bootstrap, source)) == 8 + 1 + 2


def test_dead_letters_written_after_the_start_wait_for_the_next_run(
    kafka_bootstrap: str,
    dead_letter_topics: Callable[..., tuple[str, str, DeadLetters, str]],
) -> None:
    """A redriven event that fails again must not be redriven by the same run (no loop):
    the run stops each partition at its first dead letter stamped at or after its start."""
    source, dlq, made, group = dead_letter_topics(4, produce=False)
    produce_raw(kafka_bootstrap, dlq, [(k, v, h) for k, v, h, _ in made[:2]])
    time.sleep(0.05)
    between = time.time()
    time.sleep(0.05)
    produce_raw(kafka_bootstrap, dlq, [(k, v, h) for k, v, h, _ in made[2:]])

    stopped = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group, stop=lambda: True)
    assert (stopped.read, stopped.committed, stopped.complete) == (0, {}, False)
    early = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group, clock=lambda: between)
    assert (early.read, early.redriven, early.committed, early.complete) == (2, 2, {0: 2}, True)
    rest = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group)
    assert (rest.read, rest.redriven, rest.committed) == (2, 2, {0: 4})
    assert [r.value for r in read_all(kafka_bootstrap, source)] == [v for _, v, _, _ in made]


def test_a_stopped_run_delivers_and_commits_what_it_read(
    kafka_bootstrap: str,
    dead_letter_topics: Callable[..., tuple[str, str, DeadLetters, str]],
) -> None:
    source, dlq, _, group = dead_letter_topics()  # one partition: 6 scoring failures first
    stamps = 0

    def clock() -> float:  # called at the start, then once per message sent
        nonlocal stamps
        stamps += 1
        return time.time()

    stopped = redrive(
        KAFKA, kafka_bootstrap, dlq, source, group_id=group, clock=clock, stop=lambda: stamps > 3
    )  # Ctrl-C after the third send
    assert (stopped.read, stopped.redriven, stopped.committed) == (3, 3, {0: 3})
    assert stopped.complete is False
    assert len(read_all(kafka_bootstrap, source)) == 3
    rest = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group)
    assert (rest.read, rest.redriven, rest.complete) == (8, 5, True)


def test_a_run_that_cannot_deliver_commits_nothing_more(
    kafka_bootstrap: str,
    dead_letter_topics: Callable[..., tuple[str, str, DeadLetters, str]],
) -> None:
    """Sends to a broker that is not there (a closed port) time out: the checkpoint after
    the 4th dead letter fails before it commits, and the next run reads all 11 again."""
    source, dlq, _, group = dead_letter_topics()
    nowhere = {"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 500}
    where = (KAFKA, kafka_bootstrap, dlq, source)
    with pytest.raises(RedriveError, match=r"4 of 4 redriven message.* not delivered"):
        redrive(*where, group_id=group, checkpoint_every=4, producer_settings=nowhere)
    done = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group)
    assert (done.read, done.redriven) == (11, 8)
    assert len(read_all(kafka_bootstrap, source)) == 8  # the failed run delivered nothing


def test_a_message_the_producer_refuses_fails_the_run(
    kafka_bootstrap: str,
    dead_letter_topics: Callable[..., tuple[str, str, DeadLetters, str]],
) -> None:
    """A send refused at once (over the producer's size limit) fails the run; the next run,
    its cause fixed, sends it."""
    source, dlq, _, group = dead_letter_topics(0)
    value = _event(1, "c1").replace(b"}", b" " * 1500 + b"}")
    out = dead_letter(Incoming(source, 0, 1, time.time(), b"c1", value), "x", SCORING_FAILED, dlq)
    produce_raw(kafka_bootstrap, dlq, [(out.key, value, out.headers)])
    where = (KAFKA, kafka_bootstrap, dlq, source)
    with pytest.raises(RedriveError, match=rf"{dlq}:0:0 could not be sent"):
        redrive(*where, group_id=group, producer_settings={"message.max.bytes": 1000})
    done = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group)
    assert (done.read, done.redriven) == (1, 1)
    [sent] = read_all(kafka_bootstrap, source)
    assert sent.value == value


def test_a_missing_topic_is_refused_before_anything_is_read(
    kafka_bootstrap: str,
    dead_letter_topics: Callable[..., tuple[str, str, DeadLetters, str]],
) -> None:
    source, dlq, _, group = dead_letter_topics(2)
    with pytest.raises(Exception, match="does not exist") as info:
        redrive(KAFKA, kafka_bootstrap, dlq, f"{source}-missing", group_id=group)
    assert not isinstance(info.value, RedriveError)  # nothing sent, nothing to undo
    done = redrive(KAFKA, kafka_bootstrap, dlq, source, group_id=group)
    assert (done.read, done.redriven) == (2, 2)  # the refused run committed nothing


def test_cli_redrive(
    kafka_bootstrap: str,
    dead_letter_topics: Callable[..., tuple[str, str, DeadLetters, str]],
    tmp_path: Path,
) -> None:
    source, dlq, _, group = dead_letter_topics()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FRAUDSTREAM_")}
    env |= {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_TOPICS__TRANSACTIONS": source,
        "FRAUDSTREAM_TOPICS__DEAD_LETTER": dlq,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "fraudstream", "redrive", "--group", group, *args]
        return subprocess.run(
            argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
        )

    done = run("--error-type", "worker_error")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["read"] == 11 and summary["redriven"] == 2
    assert summary["passed_over"] == {"invalid_event": 3, "scoring_failed": 6}
    assert summary["to"] == source and summary["dead_letter_topic"] == dlq
    assert len(read_all(kafka_bootstrap, source)) == 2

    wrong = run("--error-type", "scoring-failed")
    assert wrong.returncode == 2 and "scoring-failed" in wrong.stderr
    assert "invalid_event, scoring_failed, worker_error" in wrong.stderr
