"""Feast's online API vs the fast path (``fraudstream.online_store``), side by side.

    .venv/bin/python benchmarks/online_store.py [--reps 200]

Starts a private local stack (its Redis is the online store) and a private copy of the
feature repo, backfills simulated history, runs ``feast apply`` and materialises, then
times in one process, interleaved case by case:

* writes of customer-view rows: Feast ``push`` (to ``customer_features_push``) vs
  ``OnlineStore.write``, 1 and 500 rows per call, each call newer than the last (so
  neither side skips rows as stale);
* reads of the model's served features for (customer, terminal) pairs: Feast
  ``get_online_features(...).to_dict()`` vs ``OnlineStore.read`` (a DataFrame) and
  ``OnlineStore.read_arrays`` (numpy, what scoring needs), 1, 100 and 500 pairs.

Reports the median wall time per call and per row over ``--reps`` calls (fewer for the
slow Feast cases), prints a Markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from workspace import private_workspace

from fraudstream import stack
from fraudstream.config import Settings
from fraudstream.feast_env import open_store, run_feast
from fraudstream.features import CUSTOMER_VIEW, MODEL_FEATURES, feast_references
from fraudstream.online_store import OnlineStore
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate
from training.backfill import backfill, customer_table

ROOT = Path(__file__).resolve().parent.parent


def median_seconds(fn: Callable[[int], Any], reps: int, warmup: int = 3) -> float:
    """Median wall time of ``fn(i)`` over ``reps`` calls after ``warmup`` calls."""
    for i in range(warmup):
        fn(-1 - i)
    times = []
    for i in range(reps):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="calls per fast case")
    parser.add_argument("--feast-reps", type=int, default=40, help="calls per Feast case")
    args = parser.parse_args()

    with private_workspace() as ws:
        results = run(args, ws.settings)
    print(json.dumps(results, default=float))


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    endpoints = stack.resolve_endpoints(settings)
    now = datetime.now(UTC)
    start = (now - pd.Timedelta(days=15)).date().isoformat()
    events = validate_frame(
        simulate(customers=1000, terminals=2000, days=14, start=start, seed=1), keep=("is_fraud",)
    )
    backfill(events, settings.feast.repo_path)
    if run_feast(settings, endpoints, ["apply"]) != 0:
        raise SystemExit("feast apply failed")
    store = open_store(settings, endpoints)
    store.materialize(
        start_date=(events["timestamp"].min() - pd.Timedelta(days=1)).to_pydatetime(),
        end_date=now,
    )
    fast = OnlineStore.from_feature_store(store, stack.redis_client(endpoints.redis_url, settings))

    # rows to write: the latest backfilled row of 500 customers, re-stamped per call
    table = customer_table(events).drop_duplicates("customer_id", keep="last")
    rows = table.tail(500).reset_index(drop=True)
    assert len(rows) == 500
    clock = {"t": pd.Timestamp(now) + pd.Timedelta(days=1)}

    def stamped(n: int) -> pd.DataFrame:
        clock["t"] += pd.Timedelta(seconds=1)
        return rows.iloc[:n].assign(event_timestamp=clock["t"])

    pairs = events[["customer_id", "terminal_id"]].drop_duplicates().sample(500, random_state=2)
    refs = feast_references(MODEL_FEATURES)
    names = [r.split(":", 1)[1] for r in refs]

    def feast_rows(n: int) -> list[dict[str, str]]:
        return pairs.iloc[:n].to_dict("records")  # type: ignore[return-value]

    # both sides read the same values (checked once, before timing)
    check = store.get_online_features(features=refs, entity_rows=feast_rows(100)).to_df()
    mine = fast.read(pairs.iloc[:100], names)
    pd.testing.assert_frame_equal(
        check[names].astype("float64").reset_index(drop=True),
        mine[names].reset_index(drop=True),
    )

    cases: list[tuple[str, str, int, int, Callable[[int], Any]]] = []
    for n in (1, 500):
        frames_feast = [stamped(n) for _ in range(args.feast_reps + 3)]
        frames_fast = [stamped(n) for _ in range(args.reps + 3)]
        cases.append(
            (
                "write",
                "Feast push",
                n,
                args.feast_reps,
                lambda i, f=frames_feast: store.push("customer_features_push", f[i]),
            )
        )
        cases.append(
            (
                "write",
                "fast write",
                n,
                args.reps,
                lambda i, f=frames_fast: fast.write(CUSTOMER_VIEW, f[i]),
            )
        )
    for n in (1, 100, 500):
        if n <= 100:
            entity_rows = feast_rows(n)
            cases.append(
                (
                    "read",
                    "Feast get_online_features",
                    n,
                    args.feast_reps if n > 1 else args.reps,
                    lambda i, e=entity_rows: store.get_online_features(
                        features=refs, entity_rows=e
                    ).to_dict(),
                )
            )
        batch = pairs.iloc[:n].reset_index(drop=True)
        cases.append(("read", "fast read", n, args.reps, lambda i, b=batch: fast.read(b, names)))
        cases.append(
            (
                "read",
                "fast read_arrays (numpy)",
                n,
                args.reps,
                lambda i, b=batch: fast.read_arrays(b, names),
            )
        )

    measured = []
    for op, how, n, reps, fn in cases:
        seconds = median_seconds(fn, reps)
        measured.append(
            {
                "op": op,
                "how": how,
                "rows": n,
                "reps": reps,
                "us_per_call": seconds * 1e6,
                "us_per_row": seconds * 1e6 / n,
            }
        )
        print(f"{op:5} {how:32} n={n:3}: {seconds * 1e6:10.1f} µs/call", flush=True)

    def per_row(how: str, n: int) -> float:
        return next(m["us_per_row"] for m in measured if m["how"] == how and m["rows"] == n)

    ratios = {
        "push/fast write, 1 row": per_row("Feast push", 1) / per_row("fast write", 1),
        "push/fast write, 500 rows": per_row("Feast push", 500) / per_row("fast write", 500),
        "get_online_features/fast read, 1 pair": per_row("Feast get_online_features", 1)
        / per_row("fast read", 1),
        "get_online_features/fast read, 100 pairs": per_row("Feast get_online_features", 100)
        / per_row("fast read", 100),
        "get_online_features/fast read_arrays, 1 pair": per_row("Feast get_online_features", 1)
        / per_row("fast read_arrays (numpy)", 1),
        "get_online_features/fast read_arrays, 100 pairs": per_row("Feast get_online_features", 100)
        / per_row("fast read_arrays (numpy)", 100),
    }
    print()
    print("| operation | how | rows per call | median µs per call | µs per row |")
    print("|---|---|---|---|---|")
    for m in measured:
        print(
            f"| {m['op']} | {m['how']} | {m['rows']} | {m['us_per_call']:.0f} | "
            f"{m['us_per_row']:.1f} |"
        )
    print()
    for name, value in ratios.items():
        print(f"- {name}: {value:.1f}x")
    return {
        "benchmark": "online_store",
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "features_read": len(names),
        "customer_features_written": len(fast.views[CUSTOMER_VIEW].features),
        "results": measured,
        "ratios": ratios,
    }


if __name__ == "__main__":
    main()
