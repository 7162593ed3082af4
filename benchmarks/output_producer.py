"""The worker's output producer against the local broker: wall time and CPU per message.

    .venv/bin/python benchmarks/output_producer.py [--batches 60] [--size 500] [--rounds 2]

On a private local stack, delivers ``--batches`` batches of ``--size`` decision-sized
messages (the first 5 not measured) with each variant, one after the other, ``--rounds``
times in alternation, and reports per message: wall time, the CPU time of this process (all
its threads, librdkafka's included) and the broker's. Variants:

* ``per-message reports``: the worker's producer up to 2026-11-22 (reference, kept here): no
  linger, a Python delivery callback per message, served by a poll thread;
* ``DeliveringProducer``: ``streaming.delivery`` as it is (flush per batch, long linger,
  reports only for failures).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

from fraudstream.config import Settings  # noqa: E402
from fraudstream.kafka import ensure_topics, producer_config  # noqa: E402
from streaming.delivery import DeliveringProducer  # noqa: E402
from streaming.worker import Outgoing  # noqa: E402


class PerMessageReports:
    """The previous design: linger 0, one Python delivery callback per message."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self._producer = Producer(producer_config(settings.kafka, bootstrap, linger_ms=0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def deliver(self, outputs: list[Outgoing]) -> list[Any]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Any]] = loop.create_future()
        results: list[Any] = [None] * len(outputs)
        remaining = [len(outputs)]
        lock = threading.Lock()

        def report(i: int, err: Any, _msg: Any) -> None:
            with lock:
                results[i] = err
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                loop.call_soon_threadsafe(done.set_result, results)

        for i, out in enumerate(outputs):
            self._producer.produce(
                out.topic,
                value=out.value,
                key=out.key,
                on_delivery=lambda err, msg, i=i: report(i, err, msg),
            )
        return await done

    def close(self) -> int:
        left = int(self._producer.flush(10))
        self._stop.set()
        self._thread.join()
        return left


def decisions(topic: str, n: int) -> list[Outgoing]:
    """``n`` messages shaped like the worker's decisions (about 450 bytes of JSON)."""
    out = []
    for _ in range(n):
        tid = uuid.uuid4().hex
        record = {
            "schema_version": 1,
            "transaction_id": tid,
            "customer_id": "C000123",
            "terminal_id": "T00099",
            "amount": 12.5,
            "event_time": "2026-12-01T21:00:00+00:00",
            "score": 0.01234,
            "action": "approve",
            "model_version": "m-20261201T210000",
            "reasons": [{"feature": "tx_amount", "contribution": 0.1}] * 3,
            "features_age_s": 12.3,
            "degraded": False,
            "decided_at": "2026-12-01T21:00:00.123+00:00",
            "latency_ms": 12.3,
        }
        out.append(Outgoing(topic, tid.encode(), json.dumps(record).encode(), []))
    return out


async def measure(
    producer: Any, batches: list[list[Outgoing]], broker: psutil.Process
) -> dict[str, float]:
    for batch in batches[:5]:
        assert not any(await producer.deliver(batch))
    me = psutil.Process()
    c0, b0, w0 = sum(me.cpu_times()[:2]), sum(broker.cpu_times()[:2]), time.perf_counter()
    for batch in batches[5:]:
        assert not any(await producer.deliver(batch))
    c1, b1, w1 = sum(me.cpu_times()[:2]), sum(broker.cpu_times()[:2]), time.perf_counter()
    n = sum(len(b) for b in batches[5:])
    return {
        "wall_us": 1e6 * (w1 - w0) / n,
        "own_cpu_us": 1e6 * (c1 - c0) / n,
        "broker_cpu_us": 1e6 * (b1 - b0) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from workspace import private_workspace

    from fraudstream.stack import read_state

    with private_workspace("fraudstream-producer-") as ws:
        state = read_state(ws.settings)
        assert state is not None
        broker = psutil.Process(state.processes["kafka"].pid)
        bootstrap = ws.endpoints.kafka_bootstrap
        makers: dict[str, Callable[[], Any]] = {
            "per-message reports": lambda: PerMessageReports(ws.settings, bootstrap),
            "DeliveringProducer": lambda: DeliveringProducer(ws.settings.kafka, bootstrap),
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in makers}
        for _ in range(args.rounds):
            for name, make in makers.items():
                topic = f"producer-{uuid.uuid4().hex[:6]}"
                ensure_topics(ws.settings.kafka, bootstrap, [topic])
                batches = [decisions(topic, args.size) for _ in range(args.batches)]
                producer = make()
                runs[name].append(asyncio.run(measure(producer, batches, broker)))
                assert producer.close() == 0
                print(name, {k: round(v, 1) for k, v in runs[name][-1].items()}, file=sys.stderr)
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "batches": args.batches,
                "size": args.size,
                "runs": runs,
                "median": {
                    name: {k: round(statistics.median(r[k] for r in rs), 1) for k in rs[0]}
                    for name, rs in runs.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
