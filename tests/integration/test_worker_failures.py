"""A batch the worker fails on, on real Kafka, Redis and Feast: the failure (a bug) is injected
into the worker's own code; the scorer, the output producer and the topics are the real ones.

* Before its outputs are delivered: every message goes to the dead-letter topic
  (``worker_error``) with its own key and bytes, nothing reaches the decisions topic, the
  worker goes on with the next batch, and the dead letters sent back (what ``fraudstream
  redrive`` publishes) are decided with the scores they would have had.
* After: nothing is dead-lettered (each message already has its decision), so no event can
  be decided twice after a redrive; the failure is counted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pandas as pd
import pytest

from fraudstream.consume import Record
from fraudstream.dead_letters import ERROR, ERROR_TYPE, REDRIVEN_FROM, WORKER_ERROR
from fraudstream.features import transaction_digests
from fraudstream.history import unpack_entries
from fraudstream.kafka import ensure_topics
from fraudstream.metrics import AFTER_DELIVERY, BEFORE_DELIVERY, WorkerMetrics
from fraudstream.publish import encode, event_payloads
from streaming import worker
from streaming.delivery import DeliveringProducer
from streaming.worker import BatchProcessor, Incoming

from .kafka_io import read_all
from .world import World, build_world

pytestmark = pytest.mark.integration

#: Events per test (each test takes its own slice of the held-out events).
N = 30


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str) -> World:
    return build_world(
        tmp_path_factory.mktemp("failures"), kafka_bootstrap, redis_url, seed=37, held_out=4 * N
    )


@dataclass
class Rig:
    processor: BatchProcessor
    metrics: WorkerMetrics
    decisions_topic: str
    dead_letter_topic: str


@pytest.fixture
def rig(world: World, kafka_bootstrap: str) -> Iterator[Rig]:
    """A batch processor as the worker builds it, with its own output topics."""
    tag = uuid.uuid4().hex[:8]
    topics = world.settings.topics.model_copy(
        update={"decisions": f"decisions-{tag}", "dead_letter": f"dlq-{tag}"}
    )
    settings = world.settings.model_copy(update={"topics": topics})
    ensure_topics(settings.kafka, kafka_bootstrap, [topics.decisions, topics.dead_letter])
    delivery = DeliveringProducer(settings.kafka, kafka_bootstrap, message_timeout_ms=30_000)
    metrics = WorkerMetrics(stall_after_s=60.0)
    processor = BatchProcessor(settings, world.scorer, delivery=delivery, metrics=metrics)
    yield Rig(processor, metrics, topics.decisions, topics.dead_letter)
    assert delivery.close() == 0


def _messages(events: pd.DataFrame) -> list[Incoming]:
    now = time.time()
    return [
        Incoming("transactions", 0, offset, now, *encode(event))
        for offset, event in enumerate(event_payloads(events))
    ]


def _expected(world: World, events: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """Each event's score and action as the scorer gives them now (the state unchanged)."""
    scored = world.scorer.score(events, update=False).decisions
    return {d.transaction_id: (d.score, d.action) for d in scored}


def _decided(records: Sequence[Record]) -> dict[str, tuple[float, str]]:
    values = [orjson.loads(r.value or b"") for r in records]
    assert [r.key for r in records] == [v["transaction_id"].encode() for v in values]
    return {v["transaction_id"]: (v["score"], v["action"]) for v in values}


def _same(got: dict[str, tuple[float, str]], want: dict[str, tuple[float, str]]) -> None:
    assert got.keys() == want.keys()
    for tid, (score, action) in want.items():
        assert got[tid][0] == pytest.approx(score, abs=1e-6), tid
        assert got[tid][1] == action, tid


def _value(metric: Any, *labels: str) -> float:
    return float(metric.values.get(labels, 0.0))


def _stored(world: World, events: pd.DataFrame) -> int:
    """How many of ``events`` (by transaction id) their customers' stored histories hold."""
    client, history = world.scorer.history.client, world.scorer.history
    held = 0
    for customer, group in events.groupby("customer_id"):
        members = client.zrange(history.prefix + str(customer).encode(), 0, -1)
        stored = set(unpack_entries(members).ids.tolist())
        wanted = transaction_digests(list(group["transaction_id"].astype(str)))
        held += sum(digest in stored for digest in wanted.tolist())
    return held


def test_a_batch_failing_before_delivery_is_dead_lettered_whole_and_can_come_back(
    world: World, rig: Rig, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing, after = world.new.iloc[:N], world.new.iloc[N : 2 * N]
    want = _expected(world, failing)
    batch = _messages(failing)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("injected bug in decision_message")

    with monkeypatch.context() as patch:
        patch.setattr(worker, "decision_message", broken)
        asyncio.run(rig.processor.handle(batch))

    dead = read_all(kafka_bootstrap, rig.dead_letter_topic)
    assert sorted((r.key, r.value) for r in dead) == sorted((m.key, m.value) for m in batch)
    for record in dead:
        headers = dict(record.headers)
        assert headers[ERROR_TYPE] == WORKER_ERROR.encode()
        assert headers[ERROR] == b"worker error: RuntimeError: injected bug in decision_message"
    assert read_all(kafka_bootstrap, rig.decisions_topic) == []
    metrics = rig.metrics
    assert _value(metrics.dead_letters, WORKER_ERROR) == N
    assert _value(metrics.consumed) == N  # consumed = decided + dead-lettered
    assert _value(metrics.batch_failures, BEFORE_DELIVERY) == 1
    assert _value(metrics.batch_failures, AFTER_DELIVERY) == 0
    # the batch's state writes were made before the failure, and confirmed
    assert _value(metrics.state_writes_lost) == 0
    assert _stored(world, failing) == N

    # the worker goes on: the next batch is decided
    want_after = _expected(world, after)
    asyncio.run(rig.processor.handle(_messages(after)))
    _same(_decided(read_all(kafka_bootstrap, rig.decisions_topic)), want_after)

    # the dead letters sent back (as redrive does: same key and bytes) get the scores they
    # would have had: their events are already in the histories, and are scored as replays
    origin = {r.key: f"{r.topic}:{r.partition}:{r.offset}".encode() for r in dead}
    back = [
        Incoming("transactions", 0, i, time.time(), r.key, r.value, origin[r.key])
        for i, r in enumerate(dead)
    ]
    asyncio.run(rig.processor.handle(back))
    records = read_all(kafka_bootstrap, rig.decisions_topic)
    decided = _decided(records)
    _same({tid: decided[tid] for tid in want}, want)
    # each decision of a redriven event names its dead letter; the others carry no header
    by_id = {r.key: dict(r.headers) for r in records}
    for message in batch:
        tid = orjson.loads(message.value or b"")["transaction_id"].encode()
        assert by_id[tid] == {REDRIVEN_FROM: origin[message.key]}
    assert sum(not h for h in by_id.values()) == N
    assert len(read_all(kafka_bootstrap, rig.dead_letter_topic)) == N
    assert _value(metrics.consumed) == 3 * N
    assert _value(metrics.redriven) == N


@pytest.mark.parametrize("where", ["counting", "confirming state writes"])
def test_a_batch_failing_after_delivery_is_not_dead_lettered(
    world: World, rig: Rig, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    first = 2 * N if where == "counting" else 3 * N
    events = world.new.iloc[first : first + N]
    want = _expected(world, events)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"injected bug in {where}")

    with monkeypatch.context() as patch:
        if where == "counting":
            patch.setattr(BatchProcessor, "_record", broken)
        else:
            patch.setattr(worker, "confirm_writes", broken)
        asyncio.run(rig.processor.handle(_messages(events)))

    _same(_decided(read_all(kafka_bootstrap, rig.decisions_topic)), want)
    assert read_all(kafka_bootstrap, rig.dead_letter_topic) == []
    metrics = rig.metrics
    assert _value(metrics.batch_failures, AFTER_DELIVERY) == 1
    assert _value(metrics.batch_failures, BEFORE_DELIVERY) == 0
    assert _value(metrics.dead_letters, WORKER_ERROR) == 0
    if where == "counting":
        assert _value(metrics.state_writes_lost) == 0
        assert _stored(world, events) == N
    else:  # writes the failure left unconfirmed are counted as lost
        assert _value(metrics.state_writes_lost) == N
