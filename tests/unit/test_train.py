"""Training's pure steps: the decision thresholds from out-of-fold scores, and out-of-fold
models fitted as the served one is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.evaluate import Split
from training.train import DECLINE_PRECISION, check_periods, choose_thresholds, out_of_fold

pytestmark = pytest.mark.unit


def test_decline_meets_the_precision_over_a_run_of_equal_scores() -> None:
    # ten frauds at the top, then a run of twenty equal scores holding nine frauds
    scores = np.r_[np.linspace(0.99, 0.9, 10), np.full(20, 0.5), np.linspace(0.4, 0.0, 70)]
    labels = np.r_[np.ones(10), np.ones(9), np.zeros(11), np.zeros(70)].astype(int)
    decline = choose_thresholds(scores, labels)["decline"]
    declined = scores >= decline
    assert labels[declined].mean() >= DECLINE_PRECISION
    assert decline == pytest.approx(0.9)  # the run at 0.5 holds 19 of 30: not declined


def test_decline_is_the_lowest_score_that_keeps_the_precision() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(5000), 2)  # many ties
    labels = (rng.random(5000) < scores**4).astype(int)
    decline = choose_thresholds(scores, labels)["decline"]
    assert labels[scores >= decline].mean() >= DECLINE_PRECISION
    lower = scores[scores < decline]
    if len(lower):
        assert labels[scores >= lower.max()].mean() < DECLINE_PRECISION


def test_out_of_fold_models_use_the_given_parameters() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=2000) > 1).astype(int)
    groups = np.arange(2000) % 97
    names = ["a", "b", "c"]
    stumps = out_of_fold(x, y, groups, names, params={"max_depth": 1, "num_boost_round": 1})
    # one stump per fold: at most two distinct scores per fold model
    assert len(np.unique(np.round(stumps, 6))) <= 2 * 4
    assert len(np.unique(np.round(out_of_fold(x, y, groups, names), 6))) > 100


def _labels(*values: int) -> pd.DataFrame:
    return pd.DataFrame({"is_fraud": list(values)})


SPLIT = Split(pd.Timestamp("2026-01-01").date(), 7, 7, 7)


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        ((), (0, 1), "no transactions in the train period"),
        ((0, 1), (), "no transactions in the test period"),
        ((0, 0, 0), (0, 1), "the train period .* holds no fraud"),
        ((0, 1), (0, 0), "the test period .* holds no fraud"),
        ((1, 1), (0, 1), "the train period .* holds only frauds"),
    ],
)
def test_periods_that_cannot_train_or_judge_are_refused(
    train: tuple[int, ...], test: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_periods(_labels(*train), _labels(*test), SPLIT)


def test_periods_with_both_classes_pass() -> None:
    check_periods(_labels(0, 1, 0), _labels(1, 0), SPLIT)
