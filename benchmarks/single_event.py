"""Where one transaction's scoring goes: the REST API's call, stage by stage, in process.

    .venv/bin/python benchmarks/single_event.py [--customers 300] [--calls 1000]

Builds a small world (``benchmarks/small_world.py``: simulated customers, backfill, ``feast
apply``, a model trained through Feast, materialised terminals, histories in Redis) on a
private local stack, then scores held-out transactions one per call with
:meth:`~fraudstream.scoring.Scorer.score_records` (``update=False``, as ``POST /v1/score``
does by default) after 200 warm-up calls. Each stage is timed by wrapping the function the
scorer calls (the wrappers add well under a microsecond each); stages nest: ``read`` holds
``redis_round_trip``, ``model`` holds ``explain`` and ``actions``. Prints the median, p90 and
p99 µs per call of each, what each took on average in the slowest 1 % of calls (where a tail
comes from), and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))


def timed(owner: Any, name: str, key: str, into: dict[str, list[float]]) -> None:
    """Replace ``owner.name`` with a wrapper that appends each call's seconds to ``into[key]``."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            into.setdefault(key, []).append(time.perf_counter() - started)

    setattr(owner, name, wrapper)


def main() -> None:
    from workspace import private_small_world

    import fraudstream.scoring as scoring
    from fraudstream.publish import event_payloads

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    warmup = 200
    with private_small_world(
        seed=3, customers=args.customers, held_out=warmup + args.calls
    ) as world:
        scorer = world.scorer
        events = list(event_payloads(world.held_out))
        for event in events[:warmup]:
            scorer.score_records([event], update=False)
        stages: dict[str, list[float]] = {}
        timed(scoring.Batch, "from_events", "batch", stages)
        timed(scorer, "_read", "read", stages)
        timed(scorer, "_execute", "redis_round_trip", stages)
        timed(scoring, "transaction_digests", "digests", stages)
        timed(scoring, "advance_customers", "customer_kernel", stages)
        timed(scoring, "request_feature_arrays", "request_features", stages)
        timed(scorer, "_model", "model", stages)
        timed(scoring, "choose_actions", "actions", stages)
        timed(scoring, "explain", "explain", stages)
        timed(scorer, "_records", "records", stages)
        totals = []
        for event in events[warmup : warmup + args.calls]:
            started = time.perf_counter()
            scorer.score_records([event], update=False)
            totals.append(time.perf_counter() - started)
    per_call = {"call": np.asarray(totals) * 1e6}
    per_call.update({k: np.asarray(v) * 1e6 for k, v in stages.items()})
    # the slowest 1 % of calls, and what each stage took in them (stages run once per call)
    slow = np.argsort(per_call["call"])[-max(1, len(totals) // 100) :]
    table = {
        key: {
            "p50": float(np.percentile(us, 50)),
            "p90": float(np.percentile(us, 90)),
            "p99": float(np.percentile(us, 99)),
            "in_slowest_1pct": float(us[slow].mean()) if len(us) == len(totals) else None,
        }
        for key, us in per_call.items()
    }
    print(
        "\n| stage | median µs per call | p90 | p99 | mean in the slowest 1 % of calls |"
        "\n|---|---|---|---|---|"
    )
    for key, q in table.items():
        slowest = "" if q["in_slowest_1pct"] is None else f"{q['in_slowest_1pct']:.1f}"
        print(f"| {key} | {q['p50']:.1f} | {q['p90']:.1f} | {q['p99']:.1f} | {slowest} |")
    medians = {key: q["p50"] for key, q in table.items()}
    print(json.dumps({"calls": len(totals), "median_us": medians, "stages_us": table}))


if __name__ == "__main__":
    main()
