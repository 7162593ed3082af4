"""Time the simulator at the handbook's size and print one JSON line.

Usage: ``.venv/bin/python benchmarks/simulator.py [--repeat 3] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from fraudstream.simulate import simulate

CUSTOMERS, TERMINALS, DAYS = 5000, 10000, 183


def main() -> None:
    """Run the full-size simulation ``--repeat`` times and report the median wall time."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    times: list[float] = []
    df = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        df = simulate(customers=CUSTOMERS, terminals=TERMINALS, days=DAYS, seed=args.seed)
        times.append(time.perf_counter() - t0)
    assert df is not None
    rows = len(df)
    scenario = df["fraud_scenario"].value_counts()
    result = {
        "benchmark": "simulator",
        "customers": CUSTOMERS,
        "terminals": TERMINALS,
        "days": DAYS,
        "seed": args.seed,
        "repeat": args.repeat,
        "seconds_median": round(statistics.median(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "rows": rows,
        "tx_per_day": round(rows / DAYS, 1),
        "rows_per_second": round(rows / statistics.median(times)),
        "fraud_rate": round(float(df["is_fraud"].mean()), 5),
        "fraud_rate_by_scenario": {
            str(s): round(int(scenario.get(s, 0)) / rows, 5) for s in (1, 2, 3)
        },
        "fraud_count_by_scenario": {str(s): int(scenario.get(s, 0)) for s in (1, 2, 3)},
        "customers_transacting": int(df["customer_id"].nunique()),
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
