"""The stream's customer-state work for one micro-batch: flags on read-back, then features.

    .venv/bin/python benchmarks/customer_state.py [--batch 500] [--reps 30] [--rounds 8]

Simulates a world (500 customers, 1,000 terminals, 120 days), keeps the last 5,000
transactions as the stream and takes its first ``--batch`` as one micro-batch. Each of the
batch's customers gets its whole earlier history as a state read back from Redis (no
big-amount flags yet). Then, ``--rounds`` times, median ms per call over ``--reps`` calls:

* ``with_flags``: the flags of the states read back (what a cold start or a changed
  customer costs the worker once);
* ``advance_customers``: the batch's customer features from the flagged states (every batch).

Uses only public functions of ``fraudstream.features`` that older commits have too, so the
same file run from a worktree of an older commit (``cd <worktree> &&
/work/main/.venv/bin/python /work/main/benchmarks/customer_state.py``, which imports the
worktree's package) measures that commit side by side. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path.cwd()))  # the package of the tree it is run from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    import fraudstream.features as features
    from fraudstream.schema import validate_frame
    from fraudstream.simulate import simulate

    events = validate_frame(simulate(customers=500, terminals=1000, days=120, seed=3))
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    history, batch = events.iloc[:-5000], events.iloc[-5000:].iloc[: args.batch]
    customers, codes = np.unique(batch["customer_id"].to_numpy(dtype=object), return_inverse=True)
    by_customer = dict(tuple(history.groupby("customer_id", sort=False)))
    states = []
    for customer in customers:
        rows = by_customer[customer]
        states.append(
            features.CustomerState(
                features.to_ms(rows["timestamp"]),
                rows["amount"].to_numpy(np.float64),
                features.transaction_digests(rows["transaction_id"].astype(str).tolist()),
                None,
            )
        )
    codes = codes.astype(np.int64)
    ms = features.to_ms(batch["timestamp"])
    amount = batch["amount"].to_numpy(np.float64)
    ids = features.transaction_digests(batch["transaction_id"].astype(str).tolist())
    flagged = features.with_flags(states)

    def timed(call: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(args.reps):
            call()
        return (time.perf_counter() - start) / args.reps * 1e3

    flags_ms, advance_ms = [], []
    for _ in range(args.rounds):
        flags_ms.append(timed(lambda: features.with_flags(states)))
        advance_ms.append(
            timed(lambda: features.advance_customers(flagged, codes, ms, amount, ids))
        )
    print(
        json.dumps(
            {
                "package": features.__file__,
                "batch": args.batch,
                "customers": len(states),
                "history_rows": int(sum(len(s) for s in states)),
                "with_flags_ms": round(float(np.median(flags_ms)), 2),
                "advance_customers_ms": round(float(np.median(advance_ms)), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
