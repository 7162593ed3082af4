"""How high can Card Precision@100 go on a test week with the information a scorer may use?

    .venv/bin/python benchmarks/cp_ceiling.py [--data PATH] [--weeks 2018-07-04,...]

An oracle scores every fraud 1 and every genuine transaction 0, except the frauds that no
legal signal can reveal: scenario-2 frauds (compromised terminal) while the terminal's
latest transaction with a usable label (>= 7 days old) is still genuine, i.e. during the
first week of the compromise, before any of its labels has arrived. Those it scores 0.
Ties are broken at random (10 draws, mean reported). ``fraud_scenario`` is used here only
to name which frauds are hidden, never by the product.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np

from fraudstream.features import terminal_features
from fraudstream.schema import read_transactions
from training.evaluate import Split, card_precision_at_k, train_test_split

HANDBOOK = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "fraud-handbook"
    / "transactions.parquet"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=HANDBOOK)
    parser.add_argument(
        "--weeks", default="2018-07-04,2018-07-11,2018-07-18,2018-07-25,2018-08-01,2018-08-08"
    )
    args = parser.parse_args()
    events = read_transactions(args.data)
    term = terminal_features(events)
    hidden = ((events["fraud_scenario"] == 2) & (term["terminal_last_known_fraud"] == 0)).to_numpy()
    results = {}
    for start in args.weeks.split(","):
        _, test = train_test_split(events, Split(date.fromisoformat(start)))
        idx = test.index.to_numpy()
        visible = test["is_fraud"].to_numpy() * ~hidden[idx]
        rng = np.random.default_rng(0)
        cps = [
            card_precision_at_k(test, visible + rng.random(len(test)) * 1e-3, 100)[0]
            for _ in range(10)
        ]
        perfect = card_precision_at_k(test, test["is_fraud"].to_numpy().astype(float), 100)[0]
        results[start] = {
            "test_frauds": int(test["is_fraud"].sum()),
            "hidden_frauds": int((test["is_fraud"].to_numpy() & hidden[idx]).sum()),
            "cp100_ceiling": float(np.mean(cps)),
            "cp100_ceiling_best_draw": float(np.max(cps)),
            "cp100_all_labels_known": perfect,
        }
        print(start, results[start])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
