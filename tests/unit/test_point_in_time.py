"""No leakage: a feature never sees a later transaction, nor a label younger than the delay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudstream.features import LABEL_DELAY_DAYS, customer_features, terminal_features
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return validate_frame(
        simulate(customers=200, terminals=300, days=60, seed=11), keep=("is_fraud",)
    )


def features(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([customer_features(df), terminal_features(df)], axis=1)


@pytest.mark.parametrize("cut_day", [20, 45])
def test_rewriting_the_future_changes_no_past_feature(events: pd.DataFrame, cut_day: int) -> None:
    cut = events["timestamp"].min().normalize() + pd.Timedelta(days=cut_day, hours=13)
    future = events["timestamp"] > cut
    rng = np.random.default_rng(cut_day)
    changed = events.copy()
    changed.loc[future, "amount"] = rng.uniform(1, 500, future.sum())
    changed.loc[future, "is_fraud"] = 1 - changed.loc[future, "is_fraud"]
    moved = changed.loc[future, "timestamp"] - pd.to_timedelta(
        rng.integers(0, 3600, future.sum()), "s"
    )
    changed.loc[future, "timestamp"] = moved.where(moved > cut, changed.loc[future, "timestamp"])
    before, after = features(events), features(changed)
    past = ~future.to_numpy()
    pd.testing.assert_frame_equal(before[past], after[past])
    assert not before[~past].equals(after[~past])  # the perturbation did reach the features


@pytest.mark.parametrize("cut_day", [25, 40])
def test_terminal_features_ignore_labels_younger_than_the_delay(
    events: pd.DataFrame, cut_day: int
) -> None:
    """Flip every label younger than the delay at time c: no row at or before c moves."""
    t = events["timestamp"]
    cut = t.min().normalize() + pd.Timedelta(days=cut_day, hours=7)
    young = t > cut - pd.Timedelta(days=LABEL_DELAY_DAYS)
    flipped = events.copy()
    flipped.loc[young, "is_fraud"] = 1 - flipped.loc[young, "is_fraud"]
    a, b = terminal_features(events), terminal_features(flipped)
    upto = (t <= cut).to_numpy()
    pd.testing.assert_frame_equal(a[upto], b[upto])
    assert not a[~upto].equals(b[~upto])  # later rows do see those labels once old enough
