"""Train, evaluate and package a model: backfill → Feast training set → XGBoost → artifact.

The split is the handbook's (train week, delay week, test week without known
compromised cards). Decision thresholds are chosen on out-of-fold predictions of the
training week only, so nothing from the delay or test weeks leaks into them:

* ``decline``: the lowest score ``t`` such that the out-of-fold precision of ``score >= t``
  is at least :data:`DECLINE_PRECISION` (declines must be rarely wrong); when no ``t``
  reaches it, the highest out-of-fold score;
* ``review``: the score that sends :data:`REVIEW_SHARE` of transactions to review (the
  analysts' alert budget), never above ``decline``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from feast import FeatureStore

from fraudstream.drift import training_baseline
from fraudstream.features import (
    CUSTOMER_WINDOWS_DAYS,
    FEATURE_SERVICE,
    LABEL_DELAY_DAYS,
    MODEL_FEATURES,
    TERMINAL_WINDOWS_DAYS,
    Feature,
)
from fraudstream.model import environment_threads, save_artifact
from fraudstream.schema import LABEL_COLUMN
from training.backfill import backfill
from training.dataset import as_matrix, asof_features, historical_features
from training.evaluate import Split, card_precision_at_k, evaluate, train_test_split
from training.report import write_report

log = logging.getLogger(__name__)

DECLINE_PRECISION = 0.9
REVIEW_SHARE = 0.01
#: Chosen by prequential validation: four 7/7/7 splits training from 2018-06-20, 06-27,
#: 07-04 and 07-11 (test weeks up to 07-31), the highest mean validation AP of 15
#: settings; never the handbook test week. See benchmarks/RESULTS.md.
XGB_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "aucpr",
    "tree_method": "exact",
    "max_depth": 4,
    "learning_rate": 0.05,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "seed": 0,
}
NUM_BOOST_ROUND = 300


@dataclass
class TrainResult:
    out_dir: Path
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.manifest["metrics"]["test"]
        return metrics


def fingerprint(events: pd.DataFrame) -> dict[str, Any]:
    """A stable fingerprint of the training data: row count, span and a content hash."""
    digest = hashlib.sha256()
    digest.update(
        pd.util.hash_pandas_object(
            events[["transaction_id", "customer_id", "terminal_id", "amount"]], index=False
        )
        .to_numpy()
        .tobytes()
    )
    return {
        "rows": len(events),
        "first": events["timestamp"].min().isoformat(),
        "last": events["timestamp"].max().isoformat(),
        "frauds": int(events[LABEL_COLUMN].sum()),
        "sha256": digest.hexdigest(),
    }


def fit(
    matrix: np.ndarray, labels: np.ndarray, names: list[str], params: dict[str, Any] | None = None
) -> xgb.Booster:
    dtrain = xgb.DMatrix(matrix, label=labels, feature_names=names)
    merged = {**XGB_PARAMS, **(params or {}), "nthread": environment_threads()}
    rounds = int(merged.pop("num_boost_round", NUM_BOOST_ROUND))
    return xgb.train(merged, dtrain, num_boost_round=rounds)


def out_of_fold(
    matrix: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    names: list[str],
    folds: int = 4,
    params: dict[str, Any] | None = None,
) -> np.ndarray:
    """Out-of-fold scores of models fitted with ``params`` (as the served one), folds by
    customer so a card never scores itself."""
    codes = pd.factorize(groups)[0]
    fold = codes % folds
    scores = np.empty(len(labels))
    for k in range(folds):
        test = fold == k
        booster = fit(matrix[~test], labels[~test], names, params)
        scores[test] = booster.inplace_predict(matrix[test])
    return scores


def choose_thresholds(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The documented rule (module docstring) applied to out-of-fold scores."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    # ``score >= t`` takes a run of equal scores whole: precision only at the end of each run
    run_end = np.r_[s[1:] != s[:-1], True]
    ok = np.flatnonzero(run_end & (precision >= DECLINE_PRECISION))
    decline = float(s[ok[-1]]) if len(ok) else float(s[0])
    review = float(np.quantile(scores, 1 - REVIEW_SHARE))
    review = min(review, decline)
    return {
        "review": review,
        "decline": decline,
        "rule": f"decline: lowest out-of-fold score with precision >= {DECLINE_PRECISION}; "
        f"review: top {REVIEW_SHARE:.0%} of training-week scores, capped at decline",
    }


def check_periods(train_df: pd.DataFrame, test_df: pd.DataFrame, split: Split) -> None:
    """Raise ``ValueError`` unless both periods of ``split`` hold frauds and genuine
    transactions (else there is nothing to learn, or AUC and AP are undefined)."""
    b = split.bounds()
    for name, part in (("train", train_df), ("test", test_df)):
        last = (b[f"{name}_end"] - pd.Timedelta(days=1)).date()
        period = f"{name} period ({b[f'{name}_start'].date()} to {last})"
        if len(part) == 0:
            raise ValueError(f"no transactions in the {period}")
        frauds = int(part[LABEL_COLUMN].sum())
        if frauds == 0 or frauds == len(part):
            which = "no fraud" if frauds == 0 else "only frauds"
            raise ValueError(
                f"the {period} holds {which} ({len(part):,} transactions): "
                "a model cannot be trained and judged on one class"
            )


def train(
    events: pd.DataFrame,
    split: Split,
    out_dir: Path,
    store: FeatureStore,
    *,
    features: list[Feature] | None = None,
    retrieval: str = "feast",
    params: dict[str, Any] | None = None,
    backfill_first: bool = True,
) -> TrainResult:
    """The whole training run; returns where the artifact is and its manifest."""
    features = features or MODEL_FEATURES
    names = [f.name for f in features]
    timings: dict[str, float] = {}
    # checked before the backfill rewrites the offline store: a run that cannot train
    # leaves the store as it was
    train_df, test_df = train_test_split(events, split)
    check_periods(train_df, test_df, split)
    t0 = time.perf_counter()
    if backfill_first:
        backfill(events, Path(store.repo_path))
    timings["backfill_s"] = time.perf_counter() - t0

    retrieve = historical_features if retrieval == "feast" else asof_features
    t1 = time.perf_counter()
    both = pd.concat([train_df, test_df], ignore_index=True)
    inputs = retrieve(store, both, features)
    timings["training_set_s"] = time.perf_counter() - t1
    x = as_matrix(inputs)
    x_train, x_test = x[: len(train_df)], x[len(train_df) :]
    y_train = train_df[LABEL_COLUMN].to_numpy()

    t2 = time.perf_counter()
    booster = fit(x_train, y_train, names, params)
    oof = out_of_fold(x_train, y_train, train_df["customer_id"].to_numpy(), names, params=params)
    timings["fit_s"] = time.perf_counter() - t2
    thresholds = choose_thresholds(oof, y_train)

    t3 = time.perf_counter()
    test_scores = np.asarray(booster.inplace_predict(x_test))
    metrics = evaluate(test_df, test_scores)
    _, cp_per_day = card_precision_at_k(test_df, test_scores, 100)
    timings["evaluate_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0

    created = datetime.now(UTC)
    version = f"{created:%Y%m%dT%H%M%SZ}-{hashlib.sha256(booster.save_raw('ubj')).hexdigest()[:8]}"
    manifest: dict[str, Any] = {
        "model_version": version,
        "created_at": created.isoformat(),
        "feature_service": FEATURE_SERVICE,
        "features": [
            {
                "name": f.name,
                "source": f.source,
                "feast_reference": f.feast_reference,
                "description": f.description,
            }
            for f in features
        ],
        "windows": {
            "customer_days": list(CUSTOMER_WINDOWS_DAYS),
            "terminal_days": list(TERMINAL_WINDOWS_DAYS),
            "label_delay_days": LABEL_DELAY_DAYS,
        },
        "split": {
            "train_start": split.train_start.isoformat(),
            "train_days": split.train_days,
            "delay_days": split.delay_days,
            "test_days": split.test_days,
        },
        "data": fingerprint(events),
        "training_rows": len(train_df),
        "test_rows": len(test_df),
        "params": {**XGB_PARAMS, **(params or {})},
        "thresholds": thresholds,
        "metrics": {"test": {**metrics, "card_precision_at_100_per_day": cp_per_day}},
        # drift monitoring's reference: training-week features, out-of-fold scores
        "baseline": training_baseline(x_train, names, oof),
        "timings": timings,
        "retrieval": retrieval,
    }
    with tempfile.TemporaryDirectory() as tmp:
        reports = write_report(Path(tmp), test_df, test_scores, metrics, oof, y_train, thresholds)
        save_artifact(out_dir, booster, manifest, extra_files=reports)
    return TrainResult(out_dir=out_dir, manifest=manifest, timings=timings)
