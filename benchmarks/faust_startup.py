"""Faust worker start-to-ready time on the local broker: Faust defaults vs tuned.

Starts its own local stack (Tansu broker + redis-server) in a temporary directory,
then for each profile and case starts the forwarding worker of
``tests/integration/faust_smoke_app.py`` as a subprocess and times, from just
before ``Popen`` (``time.monotonic()``, CLOCK_MONOTONIC, shared by all processes):

* ``assigned``: the worker's ``on_partitions_assigned`` signal (group joined,
  partitions assigned, Faust's rebalance handling done);
* ``ready``: the agent processed an event that was produced *before* the worker
  started, i.e. the first event round trip into the agent. This is the headline.

Cases:

* ``fresh``: a consumer group nobody has used;
* ``crash``: a worker of the same group was running and processing and is
  SIGKILLed (no LeaveGroup) right before the new worker starts, so the dead
  member's session must expire before the group can rebalance.

Run from the repository root::

    .venv/bin/python benchmarks/faust_startup.py --reps 5

It prints a table and, last, one JSON line with every measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Producer  # noqa: E402

from fraudstream import stack  # noqa: E402
from fraudstream.config import Settings  # noqa: E402
from fraudstream.kafka import ensure_topics, producer_config  # noqa: E402
from streaming.app import FAUST_DEFAULTS  # noqa: E402

#: name -> (settings.kafka.session_timeout_ms handed to create_app, Faust overrides)
PROFILES: dict[str, tuple[int, dict[str, Any]]] = {
    "faust-defaults": (60_000, dict(FAUST_DEFAULTS)),
    "tuned-6s": (6_000, {}),  # create_app as shipped: session 6 s, heartbeat 2 s, rebalance 60 s
    "tuned-6s-rebalance-6s": (6_000, {"broker_rebalance_timeout": 6.0}),
    "tuned-3s": (3_000, {}),
    "tuned-6s-static": (6_000, {"consumer_group_instance_id": "bench-worker-0"}),
}
CASES = ("fresh", "crash")
TIMEOUT_S = 240.0  # a run that takes longer is recorded as a timeout (null)


@dataclass
class Worker:
    """A worker subprocess and the milestones it printed."""

    proc: subprocess.Popen[str]
    started: float
    events: list[dict[str, Any]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()

    def wait_for(self, name: str, timeout_s: float) -> float:
        """Seconds from process start to the first ``name`` milestone."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for event in self.events:
                    if event["event"] == name:
                        return float(event["t"]) - self.started
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no {name!r} within {timeout_s:g}s (rc={self.proc.poll()})")
                self.cond.wait(min(left, 0.5))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_worker(
    bootstrap: str, app_id: str, source: str, sink: str, profile: str, log: Path
) -> Worker:
    session_ms, overrides = PROFILES[profile]
    argv = [
        sys.executable, "-m", "tests.integration.faust_smoke_app",
        "--bootstrap", bootstrap, "--app-id", app_id, "--source", source, "--sink", sink,
        "--session-timeout-ms", str(session_ms), "--overrides", json.dumps(overrides),
        "--loglevel", "INFO",
    ]  # fmt: skip
    with log.open("a") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    worker = Worker(proc, started)
    threading.Thread(target=worker.read, daemon=True).start()
    return worker


def produce(producer: Producer, topic: str, key: str) -> None:
    producer.produce(topic, key=key.encode(), value=b'{"probe": true}')
    if producer.flush(10) != 0:
        raise RuntimeError(f"could not produce to {topic}")


def run_once(
    settings: Settings, bootstrap: str, producer: Producer, profile: str, case: str, logs: Path
) -> dict[str, float | None]:
    tag = uuid.uuid4().hex[:8]
    source, sink, app_id = f"bench-in-{tag}", f"bench-out-{tag}", f"bench-{profile}-{tag}"
    ensure_topics(settings.kafka, bootstrap, [source, sink], partitions=1)
    log = logs / f"{app_id}.log"
    if case == "crash":
        produce(producer, source, "warm-up")
        first = start_worker(bootstrap, app_id, source, sink, profile, log)
        try:
            first.wait_for("processed", TIMEOUT_S)
        finally:
            first.stop(signal.SIGKILL)  # dies without LeaveGroup
    produce(producer, source, "probe")
    worker = start_worker(bootstrap, app_id, source, sink, profile, log)
    result: dict[str, float | None] = {"assigned": None, "ready": None}
    try:
        result["assigned"] = worker.wait_for("assigned", TIMEOUT_S)
        result["ready"] = worker.wait_for("processed", TIMEOUT_S)
    except TimeoutError as exc:
        print(f"{profile} {case}: {exc}; log {log}", file=sys.stderr, flush=True)
    finally:
        worker.stop()
    return result


def summary(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return f"{'timeout':>20}"
    text = f"{statistics.median(done):6.2f} {min(done):6.2f} {max(done):6.2f}"
    return text + (f" ({len(values) - len(done)} timed out)" if len(done) < len(values) else "")


def fmt(value: float | None) -> str:
    return "timeout" if value is None else f"{value:6.2f}s"


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: workers, stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--logs", type=Path, help="keep worker logs here (default: discarded)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, dict[str, list[dict[str, float | None]]]] = {}
    with tempfile.TemporaryDirectory(prefix="faust-startup-") as tmp:
        settings = Settings(stack={"dir": Path(tmp) / "stack"})
        stack.up(settings)
        try:
            state = stack.read_state(settings)
            assert state is not None and state.kafka_bootstrap
            bootstrap = state.kafka_bootstrap
            producer = Producer(producer_config(settings.kafka, bootstrap))
            logs = args.logs or Path(tmp) / "workers"
            logs.mkdir(parents=True, exist_ok=True)
            # Interleave profiles within each repetition, so drift hits all alike.
            for rep in range(args.reps):
                for case in args.cases:
                    for profile in args.profiles:
                        run = run_once(settings, bootstrap, producer, profile, case, logs)
                        results.setdefault(profile, {}).setdefault(case, []).append(run)
                        print(
                            f"rep {rep + 1} {profile:22} {case:6} assigned {fmt(run['assigned'])}"
                            f"  ready {fmt(run['ready'])}",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            stack.down(settings)

    print(f"{'profile':22} {'case':6} {'n':>2}  ready s: median    min    max"
          f"   assigned s: median    min    max")  # fmt: skip
    for profile, cases in results.items():
        for case, runs in cases.items():
            ready = summary([r["ready"] for r in runs])
            assigned = summary([r["assigned"] for r in runs])
            print(f"{profile:22} {case:6} {len(runs):2}  {ready:>27}  {assigned:>30}")
    record = {
        "benchmark": "faust_startup",
        "profiles": {p: {"session_timeout_ms": PROFILES[p][0], **PROFILES[p][1]} for p in results},
        "results": results,
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
