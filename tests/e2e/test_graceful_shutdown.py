"""Graceful shutdown (issue 6, point 2): SIGTERM mid-stream finishes and commits the
in-flight batch, so a clean stop and start neither loses nor repeats a decision.

The worker is stopped with SIGTERM three times while it is busy on a backlog (each time at a
random count of decided transactions, with a micro-batch being scored or produced), and
started again. At the end every valid transaction has exactly one decision and every
malformed message exactly one dead letter, and decisions were produced between a SIGTERM and
the exit (a batch was in flight and was finished).

Why no change to the worker is needed (faust-streaming 0.15): on SIGTERM ``Worker.stop`` stops
the app, and ``App.on_stop`` first stops the consumer's flow (messages not yet handed to the
stream are skipped, never acked), then ``Consumer.wait_empty`` (``stream_wait_empty``, True by
default and not overridden by ``create_app``) waits until every message handed to a stream is
acked, committing as it goes. The agent acks a batch (``streaming.intake``) only once it is
handled, every output delivered. Only then are the agents stopped (their task cancelled while
idle, waiting for the next batch) and the consumer commits once more.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from benchmarks.chaos import WorkerProcess, World, prepare_run, publish, worker_env
from fraudstream.stack import free_port

pytestmark = pytest.mark.e2e

N_EVENTS = 12_000
N_MALFORMED = 12
STOPS = 3
TIMEOUT_S = 240.0


def test_sigterm_mid_stream_then_restart_decides_each_event_exactly_once(
    chaos_world: World, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    settings = chaos_world.settings
    run = prepare_run(
        chaos_world,
        kafka_bootstrap,
        redis_url,
        prefix="term",
        n_events=N_EVENTS,
        n_malformed=N_MALFORMED,
        seed=11,
        stack_dir=tmp_path / "stack",
        log_dir=tmp_path / "logs",
    )
    topics, events, malformed = run.topics, run.events, run.malformed
    valid_ids, malformed_keys = run.valid_ids, run.malformed_keys
    worker, reader = run.worker, run.reader
    rng = random.Random(12)
    points = sorted(rng.randrange(N_EVENTS // 10, N_EVENTS * 7 // 10) for _ in range(STOPS))
    deadline = time.monotonic() + TIMEOUT_S
    stopped_at: list[int] = []
    windows: list[tuple[float, float]] = []  # (SIGTERM sent, worker exited), wall clock
    reader.start()
    try:
        started = worker.start()
        publish(settings, kafka_bootstrap, topics["transactions"], events, malformed, seed=13)
        for point in points:
            while not (reader.decided() >= point and reader.decided_since(started)):
                assert worker.alive(), f"worker exited by itself:\n{worker.tail()}"
                assert time.monotonic() < deadline, f"{reader.decided()} decided:\n{worker.tail()}"
                time.sleep(0.02)
            stopped_at.append(reader.decided())
            signalled = time.time()
            code = worker.terminate(timeout_s=60.0)
            assert code == 0, f"exit code {code} after SIGTERM:\n{worker.tail()}"
            windows.append((signalled, time.time()))
            assert "Traceback" not in worker.tail(100_000), worker.tail()
            started = worker.start()
        while not reader.complete(valid_ids, malformed_keys):
            assert worker.alive(), f"worker exited by itself:\n{worker.tail()}"
            assert time.monotonic() < deadline, f"{reader.decided()} decided:\n{worker.tail()}"
            time.sleep(0.1)
        # the last worker may still be starting: its predecessor can drain the stream as it
        # stops (every event already handed to the agent is finished first)
        worker.wait_ready()
        time.sleep(3.0)  # a duplicate would come now, if at all
        assert worker.terminate(timeout_s=60.0) == 0, worker.tail()
    finally:
        if worker.alive():
            worker.kill()
        reader.stop()

    assert len(stopped_at) == STOPS
    assert not reader.errors, reader.errors[:3]
    assert valid_ids.issubset(reader.first), "lost decisions"
    assert set(reader.first) == valid_ids
    assert reader.n_decisions == N_EVENTS, (
        f"{reader.n_decisions - N_EVENTS} duplicate decision(s) after clean stops at {stopped_at}"
    )
    assert reader.dead == dict.fromkeys(malformed_keys, 1)
    assert not reader.conflicts
    # the stops hit batches in flight: decisions were produced between SIGTERM and exit
    # (the in-flight batch finished, then committed), and none was repeated above
    finished = [
        sum(1 for ts in reader.decision_ts_ms if sent * 1000 <= ts <= gone * 1000)
        for sent, gone in windows
    ]
    print(f"SIGTERM at {stopped_at} decided; decisions produced after the signal: {finished}")
    assert any(finished), finished


def test_sigterm_while_the_worker_starts_stops_it_cleanly_and_loses_nothing(
    chaos_world: World, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """A SIGTERM during the worker's first seconds (imports, checks, the model) stops it with
    exit code 0, not by the signal (exit status -15); a worker started after it decides
    every event once."""
    settings = chaos_world.settings
    run = prepare_run(
        chaos_world,
        kafka_bootstrap,
        redis_url,
        prefix="early",
        n_events=200,
        n_malformed=2,
        seed=17,
        stack_dir=tmp_path / "stack",
        log_dir=tmp_path / "logs",
    )
    worker, reader = run.worker, run.reader
    publish(
        settings, kafka_bootstrap, run.topics["transactions"], run.events, run.malformed, seed=18
    )
    reader.start()
    try:
        sigterm_while_starting(worker, "SIGTERM during start-up; stopped before consuming anything")
        time.sleep(1.0)
        assert reader.decided() == 0 and reader.n_dead == 0  # it consumed nothing

        worker.start()
        deadline = time.monotonic() + 120.0
        while not reader.complete(run.valid_ids, run.malformed_keys):
            assert worker.alive(), worker.tail()
            assert time.monotonic() < deadline, f"{reader.decided()} decided"
            time.sleep(0.1)
        assert worker.terminate(timeout_s=60.0) == 0, worker.tail()
    finally:
        if worker.alive():
            worker.kill()
        reader.stop()
    assert reader.n_decisions == len(run.valid_ids)
    assert reader.dead == dict.fromkeys(run.malformed_keys, 1)


def test_sigterm_while_the_api_starts_stops_it_cleanly(
    chaos_world: World, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """``fraudstream serve`` likewise: a SIGTERM before uvicorn runs gives exit code 0."""
    topics = {"transactions": "unused", "decisions": "unused", "dead_letter": "unused"}
    env = worker_env(
        chaos_world.settings,
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topics=topics,
        stack_dir=tmp_path / "stack",
    )
    command = ["serve", "--host", "127.0.0.1", "--port", str(free_port())]
    api = WorkerProcess(env, "api", tmp_path / "api-logs", command=command)
    try:
        sigterm_while_starting(api, "SIGTERM during start-up; stopped before listening")
    finally:
        if api.alive():
            api.kill()


def sigterm_while_starting(proc: WorkerProcess, said: str) -> None:
    """Start ``proc``, SIGTERM it as soon as it handles SIGTERM (past the command line's own
    imports, long before its framework runs), and check it stopped cleanly, saying ``said``."""
    proc.start()
    deadline = time.monotonic() + 30.0
    while not proc.handles(signal.SIGTERM):
        assert proc.alive(), proc.tail()
        assert time.monotonic() < deadline, "no SIGTERM handler after 30 s"
        time.sleep(0.01)
    code = proc.terminate(timeout_s=60.0)
    log = proc.tail()
    assert code == 0, f"exit code {code} after SIGTERM during start-up:\n{log}"
    assert said in log, log
    assert "Traceback" not in log, log
