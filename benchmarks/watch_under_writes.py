"""The API's key watch while the stream writes customer state: one call's time, side by side
with the round-trip path, without and with a state write before each call.

    .venv/bin/python benchmarks/watch_under_writes.py [--customers 300] [--calls 1000]

Builds a small world (``benchmarks/small_world.py``) on a private local stack and two more
scorers on it, as two API processes would have: ``watch`` (with the API's key watch,
:func:`~fraudstream.scoring.watch_keys`, at the API's default 0.1 s) and ``round trip``
(without it: every call checks its cached rows against Redis). Each held-out transaction,
in time order, is scored by both (``update=False``, as ``POST /v1/score``; which goes first
alternates), and each call is timed. Two phases of ``--calls`` transactions each, after
200 warm-up calls:

* ``reads only``: nothing writes to Redis (the API benchmark's setting);
* ``stream writes``: after both calls, the world's own scorer writes that transaction into
  the customer's state (``update=True``: the worker's write), as when every transaction the
  API scores also flows through the stream. Each customer's next call then finds its row
  reported changed, and every API process reads one message per write.

Prints the median and p99 µs per call of each scorer in each phase, how many of the watch's
calls skipped the round trip, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

WARMUP = 200
MAX_SILENCE_S = 0.1  # the API's default (ApiSettings.watch_max_silence_s)


def quantiles(us: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99))}


def main() -> None:
    from workspace import private_small_world

    from fraudstream.publish import event_payloads
    from fraudstream.scoring import build_scorer, watch_keys
    from fraudstream.stack import resolve_endpoints

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    with private_small_world(
        seed=3, customers=args.customers, held_out=WARMUP + 2 * args.calls
    ) as world:
        endpoints = resolve_endpoints(world.settings)
        readers = {
            "watch": build_scorer(world.settings, endpoints),
            "round trip": build_scorer(world.settings, endpoints),
        }
        watch = watch_keys(readers["watch"], MAX_SILENCE_S)
        writer = world.scorer  # the stream's writes
        events = list(event_payloads(world.held_out))
        names = list(readers)
        out: dict[str, Any] = {"calls": args.calls, "customers": args.customers, "phases": {}}
        phases = [("warm-up", events[:WARMUP], False)]
        phases.append(("reads only", events[WARMUP : WARMUP + args.calls], False))
        phases.append(("stream writes", events[WARMUP + args.calls :], True))
        for phase, chunk, writes in phases:
            times: dict[str, list[float]] = {name: [] for name in names}
            hits, misses = watch.hits, watch.misses
            for i, event in enumerate(chunk):
                for name in names if i % 2 == 0 else names[::-1]:
                    started = time.perf_counter()
                    readers[name].score_records([event], update=False)
                    times[name].append((time.perf_counter() - started) * 1e6)
                if writes:
                    writer.score_records([event], update=True)
            if phase == "warm-up":
                continue
            out["phases"][phase] = {
                **{name: quantiles(us) for name, us in times.items()},
                "watch_skipped_round_trip": watch.hits - hits,
                "watch_went_to_redis": watch.misses - misses,
                "watch_healthy_at_end": watch.healthy,
            }
        watch.stop()
    print(
        "\n| phase | scorer | median µs per call | p99 | watch: calls without / with a round trip |"
    )
    print("|---|---|---|---|---|")
    for phase, r in out["phases"].items():
        checks = f"{r['watch_skipped_round_trip']:,} / {r['watch_went_to_redis']:,}"
        for name in names:
            shown = checks if name == "watch" else ""
            print(f"| {phase} | {name} | {r[name]['p50']:.1f} | {r[name]['p99']:.1f} | {shown} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
