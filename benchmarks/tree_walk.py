"""Score + approximate contributions for small batches: the tree walk against XGBoost.

    .venv/bin/python benchmarks/tree_walk.py [--model DIR] [--reps 2000]

The model is a fraudstream artifact (``--model``), or by default one trained here with the
product's parameters (``training.train.XGB_PARAMS``, ``NUM_BOOST_ROUND`` rounds) on
synthetic rows of the product's 22 features. For each batch size, alternating the two ways
``--reps`` times on rows drawn from the walk's probe rows (split values, missing values):

* XGBoost: ``DMatrix`` + ``predict`` + ``predict(pred_contribs, approx_contribs)``, what
  :class:`~fraudstream.model.ModelArtifact` does for batches over ``WALK_MAX_ROWS``;
* the walk: :meth:`~fraudstream.trees.TreeWalk.run` (both results in one pass).

Checks both give the same bits, prints median µs per call as a Markdown table and one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fraudstream.trees import TreeWalk, _probe_rows  # noqa: E402

SIZES = (1, 2, 4, 8, 16, 32)


def product_like_booster() -> xgb.Booster:
    from training.train import NUM_BOOST_ROUND, XGB_PARAMS

    rng = np.random.default_rng(0)
    x = rng.lognormal(size=(20_000, 22))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 0]) * np.nan_to_num(x[:, 5]) + rng.normal(size=len(x)) > 3).astype(int)
    params = {**XGB_PARAMS, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=NUM_BOOST_ROUND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model artifact directory")
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args()
    if args.model:
        from fraudstream.model import load_artifact

        booster = load_artifact(args.model).booster
    else:
        booster = product_like_booster()
    walk = TreeWalk.from_booster(booster)
    if walk is None:
        raise SystemExit("the tree walk does not reproduce this model")
    probe = _probe_rows(walk)
    rng = np.random.default_rng(1)
    results: dict[int, dict[str, float]] = {}
    for size in SIZES:
        rows = probe[rng.integers(0, len(probe), size)]

        def with_xgboost(rows: np.ndarray = rows) -> tuple[np.ndarray, np.ndarray]:
            dmatrix = xgb.DMatrix(rows, nthread=1)
            scores = booster.predict(dmatrix, validate_features=False)
            contribs = booster.predict(
                dmatrix, pred_contribs=True, approx_contribs=True, validate_features=False
            )
            return scores, contribs

        def with_walk(rows: np.ndarray = rows) -> tuple[np.ndarray, np.ndarray]:
            assert walk is not None
            return walk.run(rows)

        expected, got = with_xgboost(), with_walk()
        assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
        times: dict[str, list[float]] = {"xgboost": [], "walk": []}
        for _ in range(args.reps):
            for way, call in (("xgboost", with_xgboost), ("walk", with_walk)):
                t = time.perf_counter()
                call()
                times[way].append(time.perf_counter() - t)
        results[size] = {way: float(np.median(t) * 1e6) for way, t in times.items()}
    trees = len(walk.roots)
    print(f"model: {trees} trees, depth {walk.depth}, {walk.n_features} features")
    print("| rows per call | XGBoost µs | walk µs | XGBoost / walk |")
    print("|---|---|---|---|")
    for size, r in results.items():
        print(f"| {size} | {r['xgboost']:.0f} | {r['walk']:.0f} | {r['xgboost'] / r['walk']:.2f} |")
    print(json.dumps({"trees": trees, "depth": walk.depth, "median_us": results}))


if __name__ == "__main__":
    main()
