"""Exact SHAP values (the reasons of flagged transactions): per-leaf tables against XGBoost.

    .venv/bin/python benchmarks/tree_shap.py [--model DIR] [--reps 300]

The model is a fraudstream artifact (``--model``), or by default one trained here with the
product's parameters (``benchmarks/tree_walk.py``'s ``product_like_booster``). For each batch
size, alternating the two ways ``--reps`` times on rows drawn from the tables' probe rows
(split values, missing values) and random rows:

* XGBoost: ``DMatrix`` + ``predict(pred_contribs=True)``, what
  :class:`~fraudstream.model.ModelArtifact` did for flagged rows before the tables;
* the tables: :meth:`~fraudstream.treeshap.LeafShap.values`.

Checks both agree within ``treeshap.TOLERANCE`` (``treeshap.agrees``), prints median µs per
row as a Markdown table, the time to build and check the tables, and one JSON line.
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
sys.path.append(str(ROOT / "benchmarks"))

from fraudstream.trees import probe_rows  # noqa: E402
from fraudstream.treeshap import LeafShap, agrees  # noqa: E402

SIZES = (1, 4, 16, 64, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model artifact directory")
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    if args.model:
        from fraudstream.model import load_artifact

        booster = load_artifact(args.model).booster
    else:
        from tree_walk import product_like_booster

        booster = product_like_booster()
    booster.set_param({"nthread": 1})
    started = time.perf_counter()
    tables = LeafShap.from_booster(booster)
    build_s = time.perf_counter() - started
    if tables is None:
        raise SystemExit("no SHAP tables for this model (see the log)")
    probe = probe_rows(tables.split_feature[:-1], tables.split_threshold[:-1], tables.n_features)
    rng = np.random.default_rng(1)
    results: dict[int, dict[str, float]] = {}
    for size in SIZES:
        rows = probe[rng.integers(0, len(probe), size)]

        def with_xgboost(rows: np.ndarray = rows) -> np.ndarray:
            dmatrix = xgb.DMatrix(rows, nthread=1)
            contribs = booster.predict(dmatrix, pred_contribs=True, validate_features=False)
            return np.asarray(contribs[:, :-1])

        def with_tables(rows: np.ndarray = rows) -> np.ndarray:
            assert tables is not None
            return tables.values(rows)

        expected, got = with_xgboost(), with_tables()
        assert agrees(got, expected).all()
        times: dict[str, list[float]] = {"xgboost": [], "tables": []}
        for _ in range(max(3, args.reps // size)):
            for way, call in (("xgboost", with_xgboost), ("tables", with_tables)):
                t = time.perf_counter()
                call()
                times[way].append(time.perf_counter() - t)
        results[size] = {way: float(np.median(t) * 1e6 / size) for way, t in times.items()}
    leaves = len(tables.all_bits)
    depth = len(tables.path_split)
    print(f"model: {leaves} leaves, depth {depth}, {tables.n_features} features")
    print(f"tables built and checked against XGBoost in {build_s:.2f} s")
    print("| rows per call | XGBoost µs per row | tables µs per row | XGBoost / tables |")
    print("|---|---|---|---|")
    for size, r in results.items():
        print(
            f"| {size} | {r['xgboost']:.0f} | {r['tables']:.0f} | {r['xgboost'] / r['tables']:.2f} |"
        )
    print(
        json.dumps(
            {"leaves": leaves, "depth": depth, "build_s": build_s, "median_us_per_row": results}
        )
    )


if __name__ == "__main__":
    main()
