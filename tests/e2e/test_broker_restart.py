"""Broker restart (issue 6, point 3): the local broker is stopped and started again mid-stream;
the worker resumes by itself (same process, no restart) and nothing is lost.

Tansu's in-memory engine loses every topic and committed offset when the broker stops, so
this test runs a PRIVATE local stack (broker only; Redis is the session's) with durable
storage: ``stack.kafka_storage_engine = s3://tansu/`` on a loopback S3 store backed by a
directory (``s3_store.py``; Tansu 0.6 here supports no other durable engine). The broker is
stopped with SIGTERM while the worker is busy, kept down a few seconds, and started again with
the same command line (same port). Half the events are published before the stop, the rest
after the start.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.chaos import World, prepare_run, publish
from fraudstream import stack
from fraudstream.config import Settings
from fraudstream.kafka import check_kafka

from .s3_store import S3Server

pytestmark = pytest.mark.e2e

N_EVENTS = 6_000
N_MALFORMED = 10
DOWN_S = 5.0
TIMEOUT_S = 240.0


def restart_broker(settings: Settings, down_s: float) -> float:
    """Stop the private stack's broker (SIGTERM), wait ``down_s``, start it again with the
    same command line (same port and storage); returns the wall-clock time of the start."""
    state = stack.read_state(settings)
    assert state is not None
    old = state.processes["kafka"]
    argv = Path(f"/proc/{old.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert stack.stop_process(old)
    time.sleep(down_s)
    assert old.log is not None
    started = time.time()
    info = stack.start_process([a.decode() for a in argv], Path(old.log))
    info.port = old.port
    state.processes["kafka"] = info
    stack.write_state(settings, state)  # so that stack.down stops the new broker
    return started


def test_worker_resumes_by_itself_after_broker_restart(
    chaos_world: World,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with S3Server(tmp_path / "s3") as s3:
        for name, value in s3.environment().items():  # read by the broker that stack.up starts
            monkeypatch.setenv(name, value)
        private = Settings(
            redis={"url": redis_url},
            stack={"dir": tmp_path / "stack", "kafka_storage_engine": "s3://tansu/"},
        )
        stack.up(private)
        try:
            run(chaos_world, private, redis_url, tmp_path)
        finally:
            stack.down(private)
        assert s3.requests > 0


def run(world: World, private: Settings, redis_url: str, tmp_path: Path) -> None:
    bootstrap = stack.resolve_endpoints(private).kafka_bootstrap
    settings = world.settings
    run = prepare_run(
        world,
        bootstrap,
        redis_url,
        prefix="brk",
        n_events=N_EVENTS,
        n_malformed=N_MALFORMED,
        seed=21,
        stack_dir=tmp_path / "worker-stack",
        log_dir=tmp_path / "logs",
    )
    topics, events, malformed = run.topics, run.events, run.malformed
    valid_ids, malformed_keys = run.valid_ids, run.malformed_keys
    worker, reader = run.worker, run.reader
    half = N_EVENTS // 2
    deadline = time.monotonic() + TIMEOUT_S
    worker.start()
    pid = worker.proc.pid if worker.proc is not None else None
    reader.start()
    try:
        publish(
            settings,
            bootstrap,
            topics["transactions"],
            events.iloc[:half],
            malformed[: N_MALFORMED // 2],
            seed=22,
        )
        while reader.decided() < half // 3:
            assert worker.alive(), f"worker exited:\n{worker.tail()}"
            assert time.monotonic() < deadline, f"{reader.decided()} decided:\n{worker.tail()}"
            time.sleep(0.02)
        before = reader.decided()
        restarted = restart_broker(private, DOWN_S)
        check_kafka(settings.kafka, bootstrap, timeout_s=10.0)
        # the stream goes on: the other half is published to the restarted broker
        publish(
            settings,
            bootstrap,
            topics["transactions"],
            events.iloc[half:],
            malformed[N_MALFORMED // 2 :],
            seed=23,
        )
        while not reader.complete(valid_ids, malformed_keys):
            assert worker.alive(), f"worker exited:\n{worker.tail()}"
            assert time.monotonic() < deadline, (
                f"{reader.decided()} of {N_EVENTS} decided ({before} before the broker "
                f"restart):\n{worker.tail()}"
            )
            time.sleep(0.1)
        resumed = reader.first_decision_after(restarted)
        print(
            f"broker restart at {before} decided; first decision {resumed:.1f} s after the "
            f"broker's start; {reader.n_decisions - len(reader.first)} duplicate(s)"
        )
        # the same worker process all along: it was never restarted
        assert worker.proc is not None and worker.proc.pid == pid and worker.starts == 1
        assert worker.terminate(timeout_s=60.0) == 0, worker.tail()
    finally:
        if worker.alive():
            worker.kill()
        reader.stop()
    assert valid_ids.issubset(reader.first), f"lost: {sorted(valid_ids - set(reader.first))[:5]}"
    assert not reader.conflicts, list(reader.conflicts.items())[:3]
    assert malformed_keys.issubset(reader.dead)
    assert set(reader.dead) == malformed_keys
