"""A batch's state writes confirmed after its decisions, as the worker does it
(:func:`streaming.worker.confirm_writes`): a reply lost with its Redis is re-sent to the Redis
that comes back, and a Redis that stays away costs the writes, never the worker.

Redis runs privately so it can be frozen (SIGSTOP: the writes wait unread in its socket) and
killed before it runs them."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fraudstream import stack
from fraudstream.features import CustomerState, transaction_digests
from fraudstream.history import SCRIPTS, CustomerHistory
from fraudstream.redis_batch import execute
from fraudstream.scoring import PendingUpdate
from streaming.worker import SETTLE_ATTEMPTS, confirm_writes

from .private_redis import start_redis

pytestmark = pytest.mark.integration

CUSTOMER = "c-1"
MS = np.array([1_700_000_000_000, 1_700_000_060_000, 1_700_000_120_000], dtype=np.int64)
AMOUNT = np.array([10.0, 20.0, 30.0])


def _writes_in_flight(port: int, work: Path) -> tuple[stack.ProcessInfo, PendingUpdate]:
    """A Redis on ``port`` frozen with one history append sent to it and not run."""
    info = start_redis(port, work)
    client = redis.Redis(port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    client.ping()  # the pooled connection the writes will go through
    history = CustomerHistory(client, "state-writes")
    # read first, as a batch does: the customer is cached (empty, version 0)
    history.states_from([CUSTOMER], execute(client, history.read_commands([CUSTOMER]), SCRIPTS))
    ids = transaction_digests([f"t-{i}" for i in range(len(MS))])
    codes = np.zeros(len(MS), dtype=np.int64)
    command = history.append_command([CUSTOMER], codes, MS, ids, AMOUNT)
    state = CustomerState(MS, AMOUNT, ids, np.zeros(len(MS), dtype=bool))
    os.kill(info.pid, signal.SIGSTOP)
    pending = PendingUpdate(history, [CUSTOMER], [state], [command], len(MS))
    os.kill(info.pid, signal.SIGKILL)  # gone before it read them
    deadline = time.monotonic() + 10
    while stack.process_running(info) and time.monotonic() < deadline:
        time.sleep(0.02)
    return info, pending


def test_writes_whose_reply_was_lost_are_sent_again_to_the_redis_that_came_back(
    tmp_path: Path,
) -> None:
    port = stack.free_port()
    _, pending = _writes_in_flight(port, tmp_path / "before")
    info = start_redis(port, tmp_path / "after")  # empty: the writes never ran
    try:
        assert asyncio.run(confirm_writes(pending, first_pause_s=0.05))
        history = pending.history
        replies = execute(history.client, history.read_commands([CUSTOMER]), SCRIPTS)
        (version,) = replies[0]  # written by the re-send, and cached at that version
        assert int(version) > 1_700_000_000 * 10**6  # Redis's clock in µs, not a count from 1
        assert history.cached_versions([CUSTOMER]) == [int(version)]
        reads = history.reads
        [state] = history.states_from([CUSTOMER], replies)
        assert history.reads == reads  # the re-send cached the state with its version
        np.testing.assert_array_equal(state.ms, MS)
        np.testing.assert_array_equal(state.amount, AMOUNT)
    finally:
        stack.stop_process(info)


def test_writes_redis_never_confirms_are_given_up_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, pending = _writes_in_flight(stack.free_port(), tmp_path / "gone")
    started = time.monotonic()
    assert not asyncio.run(confirm_writes(pending, first_pause_s=0.05))
    assert time.monotonic() - started < 10
    attempts = [r for r in caplog.records if "not confirmed" in r.getMessage()]
    assert len(attempts) == SETTLE_ATTEMPTS
    assert any("lost" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
