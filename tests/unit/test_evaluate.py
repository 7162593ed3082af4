"""Metrics and split against independent references (scikit-learn, the handbook's code)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate
from training.evaluate import (
    Split,
    auc_roc,
    average_precision,
    card_precision_at_k,
    train_test_split,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_ap_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(5000) < 0.02
    score = np.round(rng.random(5000) + y * rng.random(5000), 2)  # ties on purpose
    assert auc_roc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert average_precision(y, score) == pytest.approx(
        average_precision_score(y, score), abs=1e-12
    )


def handbook_cp(df: pd.DataFrame, k: int) -> float:
    """The handbook's card_precision_top_k, transcribed."""
    detected: list = []
    per_day = []
    for day in sorted(df["day"].unique()):
        d = df[df["day"] == day]
        d = d[~d["customer_id"].isin(detected)]
        d = (
            d.groupby("customer_id")[["pred", "is_fraud"]]
            .max()
            .sort_values("pred", ascending=False, kind="mergesort")
        )
        top = d.head(k)
        hits = list(top[top["is_fraud"] == 1].index)
        per_day.append(len(hits) / k)
        detected.extend(hits)
    return float(np.mean(per_day))


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return validate_frame(
        simulate(customers=400, terminals=800, days=40, seed=3), keep=("is_fraud",)
    )


def test_card_precision_matches_handbook(sim: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    pred = rng.random(len(sim)) + sim["is_fraud"].to_numpy() * 0.5
    origin = sim["timestamp"].min()
    df = sim.assign(pred=pred, day=(sim["timestamp"] - origin.normalize()).dt.days)
    for k in (5, 20, 100):
        ours, per_day = card_precision_at_k(sim, pred, k, origin)
        assert ours == pytest.approx(handbook_cp(df, k), abs=1e-12)
        assert len(per_day) == df["day"].nunique()


def test_split_leaves_out_known_compromised_cards(sim: pd.DataFrame) -> None:
    split = Split(date.fromisoformat(str(sim["timestamp"].min().date())), 7, 7, 7)
    train, test = train_test_split(sim, split)
    b = split.bounds()
    assert train["timestamp"].between(b["train_start"], b["train_end"], inclusive="left").all()
    assert test["timestamp"].between(b["test_start"], b["test_end"], inclusive="left").all()
    known = set(train.loc[train["is_fraud"] == 1, "customer_id"])
    assert known and not (known & set(test["customer_id"]))
    day = (sim["timestamp"] - b["train_start"]).dt.days
    for i in range(7):
        revealed = set(sim.loc[(day == 7 + i - 1) & (sim["is_fraud"] == 1), "customer_id"])
        test_day = test[(test["timestamp"] - b["train_start"]).dt.days == 14 + i]
        assert not (revealed & set(test_day["customer_id"]))
        for j in range(i):
            earlier = set(sim.loc[(day == 7 + j - 1) & (sim["is_fraud"] == 1), "customer_id"])
            assert not (earlier & set(test_day["customer_id"]))
    # nothing else is removed: every test-period row of an unknown card is kept
    all_test = sim[(day >= 14) & (day < 21)]
    assert len(test) < len(all_test) and len(test) > 0.8 * len(all_test)
