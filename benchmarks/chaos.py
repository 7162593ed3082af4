"""Crash and restart: SIGKILL the worker mid-stream, start it again, and count what was lost.

    .venv/bin/python benchmarks/chaos.py [--events 100000] [--kills 5] [--malformed N] [--seed S]

Starts ONE private local stack (Tansu + Redis on loopback, temporary directory) and builds a
small world in it (simulated history, backfill, ``feast apply``, a trained model, terminal
snapshot materialised, the customers' history in Redis). The stream is ``--events`` valid
transactions of the simulated customers and terminals, timed after the terminal refresh
(distinct ids), plus ``--malformed`` broken messages (bad JSON, not UTF-8, missing or wrongly
typed fields, zero or NaN amounts, naive timestamps, JSON arrays) at random positions.

One worker (``python -m fraudstream worker``, its own process group) runs while the events
are published. At ``--kills`` random points of the stream (a random count of decided
transactions, each drawn in 5-85 % of the stream and reached after the worker of the moment
has produced its first decision) the worker's process group gets SIGKILL and a new worker is
started at once. When every valid transaction has a decision and every malformed message a
dead letter (or ``--timeout`` s pass), the last worker is stopped with SIGTERM. Then:

* ``lost``: valid transaction ids with no decision (must be 0);
* ``conflicting``: ids with a decision whose score or action differs from the id's first
  decision (must be 0; replays must score exactly as the first time);
* ``duplicates``: decisions beyond the first per id (at-least-once: events replayed after a
  kill, from the last committed offset);
* ``dlq``: dead letters read; ``malformed_missing``: malformed messages with no dead letter
  (must be 0); ``unexpected_dlq``: dead letters that are not malformed messages;
* per kill: the decided count at the kill and the recovery time, from the new worker's start
  to its first decision (the decision's Kafka timestamp).

Prints one line ``lost=<n> conflicting=<n> duplicates=<n> dlq=<n>``, then the details and a
JSON line. Exit code 1 when lost, conflicting or malformed_missing is not 0.

The same harness runs the e2e test (``tests/e2e/test_chaos.py``, 20,000 events).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.small_world import build_small_world, process_env  # noqa: E402
from fraudstream.config import Settings  # noqa: E402
from fraudstream.kafka import confluent_config, ensure_topics, producer_config  # noqa: E402
from fraudstream.publish import encode, event_payloads  # noqa: E402

#: Spacing of the stream's event times (100,000 events span 1,000 s, within the worker's
#: one-day future bound).
EVENT_STEP_MS = 10
#: Kill points are drawn in this fraction of the stream.
KILL_RANGE = (0.05, 0.85)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the world


@dataclass
class World:
    settings: Settings  # names Kafka and Redis as external services
    past: pd.DataFrame
    refreshed_at: pd.Timestamp


def build_world(
    root: Path, kafka_bootstrap: str, redis_url: str, *, seed: int = 7, customers: int = 300
) -> World:
    """Model, Feast repo (a private project: its own Redis keys) and history in Redis."""
    built = build_small_world(
        root, kafka_bootstrap, redis_url, seed=seed, customers=customers, project_prefix="c"
    )
    return World(built.settings, built.past.drop(columns=["is_fraud"]), built.refreshed_at)


def stream_events(world: World, n: int, *, seed: int, tag: str) -> pd.DataFrame:
    """``n`` new transactions of the world's customers and terminals, timed after the refresh
    (``EVENT_STEP_MS`` apart, after the newest event so far), ids ``<tag>-<i>``."""
    rng = random.Random(seed)
    rows = world.past.sample(n=n, replace=True, random_state=rng.randrange(2**31))
    events = rows.reset_index(drop=True).copy()
    start = max(world.refreshed_at, pd.Timestamp.now(tz="UTC")) + pd.Timedelta(seconds=2)
    events["timestamp"] = start + pd.to_timedelta([i * EVENT_STEP_MS for i in range(n)], unit="ms")
    events["transaction_id"] = pd.array([f"{tag}-{i}" for i in range(n)], dtype="string[pyarrow]")
    return events


#: Broken messages; ``{i}`` makes each one distinct.
MALFORMED_TEMPLATES: list[str] = [
    '{{"transaction_id": "bad-{i}", ',
    '{{"transaction_id":"bad-{i}","timestamp":"2026-01-01T00:00:00Z","customer_id":"c","amount":3}}',
    '{{"transaction_id":"bad-{i}","timestamp":"2026-01-01T00:00:00Z","customer_id":"c","terminal_id":"t","amount":0}}',
    '{{"transaction_id":"bad-{i}","timestamp":"2026-01-01T00:00:00Z","customer_id":"c","terminal_id":"t","amount":NaN}}',
    '{{"transaction_id":"bad-{i}","timestamp":"2026-01-01T00:00:00","customer_id":"c","terminal_id":"t","amount":5}}',
    '{{"transaction_id":"bad-{i}","timestamp":"2026-01-01T00:00:00Z","customer_id":"c","terminal_id":"t","amount":"12.5"}}',
    "[{i}, 2]",
]


def malformed_messages(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` distinct malformed ``(key, value)`` messages, keyed ``bad-<i>``."""
    out = []
    for i in range(n):
        key = f"bad-{i}".encode()
        if i % (len(MALFORMED_TEMPLATES) + 1) == len(MALFORMED_TEMPLATES):
            value = b"\xff\xfe not utf-8 " + str(i).encode()
        else:
            value = MALFORMED_TEMPLATES[i % (len(MALFORMED_TEMPLATES) + 1)].format(i=i).encode()
        out.append((key, value))
    return out


def publish(
    settings: Settings,
    bootstrap: str,
    topic: str,
    events: pd.DataFrame,
    malformed: list[tuple[bytes, bytes]],
    *,
    seed: int,
    extra: dict[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``events`` (keyed by customer) with ``malformed`` at random positions; returns
    the number of messages delivered (raises when any is not)."""
    rng = random.Random(seed)
    at: dict[int, list[tuple[bytes, bytes]]] = {}
    for message in malformed:
        at.setdefault(rng.randrange(len(events) + 1), []).append(message)
    producer = Producer({**producer_config(settings.kafka, bootstrap), **(extra or {})})
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    def send(key: bytes, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)

    sent = 0
    for i, event in enumerate(event_payloads(events)):
        for key, value in at.get(i, []):
            send(key, value)
            sent += 1
        send(*encode(event))
        sent += 1
        if on_progress is not None and i % 1000 == 0:
            on_progress(i)
    for key, value in at.get(len(events), []):
        send(key, value)
        sent += 1
    remaining = producer.flush(120)
    if remaining or failed:
        raise RuntimeError(f"{remaining} undelivered, {len(failed)} failed: {failed[:3]}")
    return sent


# ------------------------------------------------------------------ the worker


def worker_env(
    settings: Settings,
    *,
    bootstrap: str,
    redis_url: str,
    topics: dict[str, str],
    stack_dir: Path,
    batch_size: int | None = None,
) -> dict[str, str]:
    """The worker subprocess's environment: no inherited ``FRAUDSTREAM_*``, this world's."""
    extra = {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "FRAUDSTREAM_REDIS__URL": redis_url,
        "FRAUDSTREAM_TOPICS__TRANSACTIONS": topics["transactions"],
        "FRAUDSTREAM_TOPICS__DECISIONS": topics["decisions"],
        "FRAUDSTREAM_TOPICS__DEAD_LETTER": topics["dead_letter"],
    }
    if batch_size is not None:
        extra["FRAUDSTREAM_SCORING__BATCH_SIZE"] = str(batch_size)
    return process_env(settings, stack_dir, extra)


READY_LINE = "[^Worker]: Ready"  # Faust logs it once the worker has started (faust.worker)


class WorkerProcess:
    """``python -m fraudstream worker`` (or ``command``) in its own process group, one log per
    start."""

    def __init__(
        self,
        env: dict[str, str],
        app_id: str,
        log_dir: Path,
        command: list[str] | None = None,
    ) -> None:
        self.env = env
        self.app_id = app_id
        self.log_dir = log_dir
        self.command = command or ["worker", "--app-id", app_id]
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path: Path | None = None

    def start(self) -> float:
        """Start a new worker; returns the wall-clock time of the start."""
        assert self.proc is None or self.proc.poll() is not None, "a worker is running"
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"worker-{self.starts}.log"
        started = time.time()
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fraudstream", *self.command],
                cwd=self.log_dir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the worker's process group and reap it."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait; the exit code, or None (then killed) when it did not stop."""
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def handles(self, sig: signal.Signals) -> bool:
        """Whether the worker process has a handler for ``sig`` (Linux: ``SigCgt`` in /proc)."""
        assert self.proc is not None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except FileNotFoundError:
            return False
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) >> (sig - 1) & 1)

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Wait for Faust's ``Ready`` (partitions assigned, the agent consuming); the seconds
        since :meth:`start`. Raises when the worker exits or ``timeout_s`` passes first."""
        t0 = time.monotonic()
        while READY_LINE not in self.tail(1_000_000):
            if not self.alive():
                raise RuntimeError(f"worker exited before it was ready:\n{self.tail()}")
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"worker not ready after {timeout_s:g} s:\n{self.tail()}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def tail(self, n: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n:]


# ------------------------------------------------------------------ the outputs


class OutputReader:
    """Reads the decisions and dead-letter topics from the beginning, in a thread."""

    def __init__(self, settings: Settings, bootstrap: str, topics: dict[str, str]) -> None:
        conf = confluent_config(settings.kafka, bootstrap)
        conf.update(
            {
                "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "log_level": 2,  # no connection-refused lines while a broker restarts
            }
        )
        self.consumer = Consumer(conf)
        self.consumer.assign(
            [
                TopicPartition(topics[name], p, OFFSET_BEGINNING)
                for name in ("decisions", "dead_letter")
                for p in range(settings.kafka.partitions)
            ]
        )
        self.decisions_topic = topics["decisions"]
        self.lock = threading.Lock()
        #: transaction_id -> (score, action) of its first decision
        self.first: dict[str, tuple[float, str]] = {}
        self.conflicts: dict[str, list[tuple[float, str]]] = {}
        self.n_decisions = 0
        self.decision_ts_ms: list[int] = []  # Kafka timestamps, arrival order
        self.last_ts_ms = 0
        self.dead: dict[bytes | None, int] = {}
        self.dead_types: dict[str, int] = {}
        self.n_dead = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self.consumer.consume(1000, timeout=0.2)
            with self.lock:
                for msg in messages:
                    if msg.error() is not None:
                        self.errors.append(str(msg.error()))
                        continue
                    if msg.topic() == self.decisions_topic:
                        self._decision(msg)
                    else:
                        headers = dict(msg.headers() or [])
                        self.dead[msg.key()] = self.dead.get(msg.key(), 0) + 1
                        raw = headers.get("error_type")
                        kind = raw.decode() if isinstance(raw, bytes) else str(raw)
                        self.dead_types[kind] = self.dead_types.get(kind, 0) + 1
                        self.n_dead += 1

    def _decision(self, msg: Any) -> None:
        record = orjson.loads(msg.value())
        tx, got = record["transaction_id"], (record["score"], record["action"])
        first = self.first.setdefault(tx, got)
        if got != first:
            self.conflicts.setdefault(tx, [first]).append(got)
        self.n_decisions += 1
        ts = msg.timestamp()[1]
        self.decision_ts_ms.append(ts)
        self.last_ts_ms = max(self.last_ts_ms, ts)

    def decided(self) -> int:
        with self.lock:
            return len(self.first)

    def decided_since(self, wall_s: float) -> bool:
        with self.lock:
            return self.last_ts_ms >= wall_s * 1000

    def complete(self, valid_ids: set[str], malformed_keys: set[bytes]) -> bool:
        with self.lock:
            if len(self.first) < len(valid_ids) or len(self.dead) < len(malformed_keys):
                return False
            return valid_ids.issubset(self.first) and malformed_keys.issubset(self.dead)

    def first_decision_after(self, wall_s: float) -> float | None:
        """Seconds from ``wall_s`` to the first decision timestamped at or after it."""
        with self.lock:
            stamps = sorted(self.decision_ts_ms)
        i = bisect.bisect_left(stamps, wall_s * 1000)
        return None if i == len(stamps) else stamps[i] / 1000 - wall_s


# ------------------------------------------------------------------ the run


@dataclass
class Kill:
    at_decided: int
    killed_at: float
    restarted_at: float
    recovery_s: float | None = None


@dataclass
class ChaosResult:
    events: int
    malformed: int
    kills: list[Kill] = field(default_factory=list)
    lost: int = 0
    conflicting: int = 0
    duplicates: int = 0
    decisions: int = 0
    dlq: int = 0
    malformed_missing: int = 0
    unexpected_dlq: int = 0
    dead_letter_types: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    complete: bool = False
    final_exit_code: int | None = None
    examples: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"lost={self.lost} conflicting={self.conflicting} "
            f"duplicates={self.duplicates} dlq={self.dlq}"
        )

    def ok(self) -> bool:
        return self.lost == 0 and self.conflicting == 0 and self.malformed_missing == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "malformed": self.malformed,
            "kills": len(self.kills),
            "lost": self.lost,
            "conflicting": self.conflicting,
            "duplicates": self.duplicates,
            "decisions": self.decisions,
            "dlq": self.dlq,
            "malformed_missing": self.malformed_missing,
            "unexpected_dlq": self.unexpected_dlq,
            "dead_letter_types": self.dead_letter_types,
            "kill_at_decided": [k.at_decided for k in self.kills],
            "recovery_s": [
                None if k.recovery_s is None else round(k.recovery_s, 2) for k in self.kills
            ],
            "seconds": round(self.seconds, 1),
            "complete": self.complete,
            "final_exit_code": self.final_exit_code,
        }


@dataclass
class Run:
    """What one reliability run works on: its topics, events, worker and output reader."""

    topics: dict[str, str]
    events: pd.DataFrame
    malformed: list[tuple[bytes, bytes]]
    valid_ids: set[str]
    malformed_keys: set[bytes]
    worker: WorkerProcess
    reader: OutputReader


def prepare_run(
    world: World,
    bootstrap: str,
    redis_url: str,
    *,
    prefix: str,
    n_events: int,
    n_malformed: int,
    seed: int,
    stack_dir: Path,
    log_dir: Path,
    batch_size: int | None = None,
) -> Run:
    """Topics of a fresh tag (created), ``n_events`` stream events, ``n_malformed`` broken
    messages, a worker process (not started) and an output reader (not started)."""
    settings = world.settings
    tag = f"{prefix}{uuid.uuid4().hex[:8]}"
    topics = {
        "transactions": f"tx-{tag}",
        "decisions": f"decisions-{tag}",
        "dead_letter": f"tx-{tag}.dlq",
    }
    ensure_topics(settings.kafka, bootstrap, list(topics.values()))
    events = stream_events(world, n_events, seed=seed, tag=tag)
    malformed = malformed_messages(n_malformed)
    env = worker_env(
        settings,
        bootstrap=bootstrap,
        redis_url=redis_url,
        topics=topics,
        stack_dir=stack_dir,
        batch_size=batch_size,
    )
    return Run(
        topics=topics,
        events=events,
        malformed=malformed,
        valid_ids=set(events["transaction_id"].astype(str)),
        malformed_keys={key for key, _ in malformed},
        worker=WorkerProcess(env, f"worker-{tag}", log_dir),
        reader=OutputReader(settings, bootstrap, topics),
    )


def run_chaos(
    world: World,
    *,
    bootstrap: str,
    redis_url: str,
    work: Path,
    n_events: int,
    n_malformed: int,
    kills: int = 5,
    seed: int = 1,
    batch_size: int | None = None,
    timeout_s: float = 600.0,
) -> ChaosResult:
    """Publish, kill the worker ``kills`` times at random points, restart it each time,
    wait for every output, stop cleanly, and count (see the module's docstring)."""
    rng = random.Random(seed)
    settings = world.settings
    run = prepare_run(
        world,
        bootstrap,
        redis_url,
        prefix="chaos",
        n_events=n_events,
        n_malformed=n_malformed,
        seed=seed,
        stack_dir=work / "stack",
        log_dir=work / "logs",
        batch_size=batch_size,
    )
    topics, events, malformed = run.topics, run.events, run.malformed
    valid_ids, malformed_keys = run.valid_ids, run.malformed_keys
    worker, reader = run.worker, run.reader
    lo, hi = KILL_RANGE
    points = sorted(int(rng.uniform(lo, hi) * n_events) for _ in range(kills))
    result = ChaosResult(events=n_events, malformed=n_malformed)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    reader.start()
    try:
        started = worker.start()
        log(f"worker started; publishing {n_events:,} events + {n_malformed} malformed")
        publish(settings, bootstrap, topics["transactions"], events, malformed, seed=seed)
        log(f"published in {time.monotonic() - t0:.1f} s; kill points {points}")
        for point in points:
            while not (reader.decided() >= point and reader.decided_since(started)):
                if not worker.alive():
                    raise RuntimeError(f"worker exited by itself:\n{worker.tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{reader.decided()} decided, waiting for {point}:\n{worker.tail()}"
                    )
                time.sleep(0.02)
            at = reader.decided()
            killed = time.time()
            worker.kill()
            started = worker.start()
            result.kills.append(Kill(at, killed, started))
            log(f"kill {len(result.kills)}: SIGKILL at {at:,} decided; restarted")
        while not reader.complete(valid_ids, malformed_keys):
            if not worker.alive():
                raise RuntimeError(f"worker exited by itself:\n{worker.tail()}")
            if time.monotonic() > deadline:
                log(f"timeout: {reader.decided():,} of {n_events:,} decided")
                break
            time.sleep(0.1)
        else:
            result.complete = True
        if result.complete:
            # the last worker may still be starting (its predecessor drained the stream)
            worker.wait_ready()
        time.sleep(3.0)  # late duplicates
        result.final_exit_code = worker.terminate()
        time.sleep(1.0)
    finally:
        if worker.alive():
            worker.kill()
        reader.stop()
    result.seconds = time.monotonic() - t0
    for kill in result.kills:
        kill.recovery_s = reader.first_decision_after(kill.restarted_at)
    missing = valid_ids.difference(reader.first)
    result.lost = len(missing)
    result.conflicting = len(reader.conflicts)
    result.decisions = reader.n_decisions
    result.duplicates = reader.n_decisions - len(reader.first)
    result.dlq = reader.n_dead
    result.malformed_missing = len(malformed_keys.difference(reader.dead))
    result.unexpected_dlq = sum(n for key, n in reader.dead.items() if key not in malformed_keys)
    result.dead_letter_types = dict(reader.dead_types)
    result.examples = {
        "lost": sorted(missing)[:5],
        "conflicts": dict(list(reader.conflicts.items())[:5]),
        "reader_errors": reader.errors[:5],
        "worker_log": worker.tail(2000),
    }
    return result


# ------------------------------------------------------------------ the benchmark


@contextlib.contextmanager
def _workspace() -> Iterator[Any]:
    from benchmarks.workspace import private_workspace

    with private_workspace("fraudstream-chaos-") as ws:
        yield ws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--malformed", type=int, default=None, help="default: events / 1,000")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    n_malformed = args.malformed if args.malformed is not None else max(1, args.events // 1000)
    with _workspace() as ws:
        t0 = time.perf_counter()
        world = build_world(
            ws.work / "world",
            ws.endpoints.kafka_bootstrap,
            ws.endpoints.redis_url,
            seed=args.seed,
            customers=args.customers,
        )
        log(f"world ready in {time.perf_counter() - t0:.0f} s")
        result = run_chaos(
            world,
            bootstrap=ws.endpoints.kafka_bootstrap,
            redis_url=ws.endpoints.redis_url,
            work=ws.work,
            n_events=args.events,
            n_malformed=n_malformed,
            kills=args.kills,
            seed=args.seed,
            batch_size=args.batch_size,
            timeout_s=args.timeout,
        )
    print(result.summary())
    print(f"events={result.events} malformed={result.malformed} kills={len(result.kills)}")
    print(
        f"decisions={result.decisions} malformed_missing={result.malformed_missing} "
        f"unexpected_dlq={result.unexpected_dlq} complete={result.complete} "
        f"final_exit_code={result.final_exit_code} seconds={result.seconds:.1f}"
    )
    for i, kill in enumerate(result.kills, 1):
        rec = "none" if kill.recovery_s is None else f"{kill.recovery_s:.2f} s"
        print(
            f"kill {i}: at {kill.at_decided:,} decided, recovery (restart -> next decision) {rec}"
        )
    if not result.ok():
        print(json.dumps(result.examples, default=str)[:4000], file=sys.stderr)
    print(
        json.dumps(
            {
                **result.as_dict(),
                "seed": args.seed,
                "python": platform.python_version(),
                "cores": os.cpu_count(),
            }
        )
    )
    return 0 if result.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
