"""The backfill against an independent, plain pandas implementation of the handbook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudstream.features import (
    customer_features,
    request_features,
    terminal_features,
    terminal_snapshots,
)
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate

pytestmark = pytest.mark.unit


def handbook_customer(df: pd.DataFrame) -> pd.DataFrame:
    """The handbook's own way: a time-based rolling window per customer, current included.

    pandas' rolling is positional for equal timestamps; the definition (t - w, t] includes
    every transaction at t, which is the value at the last of the tied rows.
    """
    out = []
    for _, g in df.groupby("customer_id", sort=False):
        g = g.sort_values("timestamp", kind="stable").set_index("timestamp")
        cols = {}
        for w in (1, 7, 30):
            count = g["amount"].rolling(f"{w}D").count()
            total = g["amount"].rolling(f"{w}D").sum()
            cols[f"customer_nb_tx_{w}d"] = count.to_numpy()
            cols[f"customer_avg_amount_{w}d"] = (total / count).to_numpy()
        frame = pd.DataFrame(cols, index=g["row"].to_numpy())
        ties = g.index.to_numpy()
        frame = frame.groupby(ties, sort=False).transform("last").set_axis(frame.index)
        out.append(frame)
    return pd.concat(out).sort_index()


def handbook_terminal(df: pd.DataFrame, delay: int = 7) -> pd.DataFrame:
    """The handbook's delayed count/risk: rolling(d+w) minus rolling(d), per terminal."""
    out = []
    for _, g in df.groupby("terminal_id", sort=False):
        g = g.sort_values("timestamp", kind="stable").set_index("timestamp")
        nb_delay = g["is_fraud"].rolling(f"{delay}D").count()
        fraud_delay = g["is_fraud"].rolling(f"{delay}D").sum()
        cols = {}
        for w in (1, 7, 30):
            nb = g["is_fraud"].rolling(f"{delay + w}D").count() - nb_delay
            fraud = g["is_fraud"].rolling(f"{delay + w}D").sum() - fraud_delay
            cols[f"terminal_nb_tx_{w}d"] = nb.to_numpy()
            cols[f"terminal_risk_{w}d"] = (fraud / nb).fillna(0).to_numpy()
        out.append(pd.DataFrame(cols, index=g["row"].to_numpy()))
    return pd.concat(out).sort_index()


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    raw = simulate(customers=150, terminals=300, days=75, seed=7)
    # make some transactions share the instant of the customer's previous one (ties)
    previous = raw.groupby("customer_id")["timestamp"].shift(1)
    tie = previous.notna() & (np.random.default_rng(0).random(len(raw)) < 0.02)
    raw.loc[tie, "timestamp"] = previous[tie]
    df = validate_frame(raw, keep=("is_fraud",))
    df["row"] = np.arange(len(df))
    return df


def test_customer_windows_match_pandas(sample: pd.DataFrame) -> None:
    ours = customer_features(sample)
    ref = handbook_customer(sample)
    assert len(ours) == len(sample) > 5000
    assert sample.duplicated(["customer_id", "timestamp"]).any()  # ties are exercised
    for column in ref.columns:
        np.testing.assert_allclose(
            ours[column].to_numpy(), ref[column].to_numpy(), rtol=0, atol=1e-9
        )


def test_customer_extras_by_brute_force(sample: pd.DataFrame) -> None:
    """Earlier-transaction means and the count of earlier large amounts, row by row."""
    ours = customer_features(sample)
    rng = np.random.default_rng(1)
    by_customer = {c: g for c, g in sample.groupby("customer_id")}
    rows = rng.choice(len(sample), size=400, replace=False)
    seen_nan = seen_big = 0
    for i in rows:
        row = sample.iloc[i]
        txs = by_customer[row["customer_id"]]
        t = row["timestamp"]
        for w in (30, 60, 120):
            earlier = txs[(txs["timestamp"] > t - pd.Timedelta(days=w)) & (txs["timestamp"] < t)]
            expected = earlier["amount"].mean() if len(earlier) else np.nan
            got = ours.loc[sample.index[i], f"customer_prev_avg_amount_{w}d"]
            if np.isnan(expected):
                assert np.isnan(got)
                seen_nan += 1
            else:
                assert abs(got - expected) <= 1e-9
        recent = txs[(txs["timestamp"] > t - pd.Timedelta(days=14)) & (txs["timestamp"] < t)]
        big = 0
        for _, r in recent.iterrows():
            prior = txs[
                (txs["timestamp"] > r["timestamp"] - pd.Timedelta(days=30))
                & (txs["timestamp"] < r["timestamp"])
            ]
            big += bool(len(prior)) and r["amount"] > 3 * prior["amount"].mean()
        assert ours.loc[sample.index[i], "customer_nb_big_prev_14d"] == big
        seen_big += big
    assert seen_nan > 0 and seen_big > 0


def test_terminal_runs_by_brute_force(sample: pd.DataFrame) -> None:
    """Label, run length and run age at the latest transaction with a usable label."""
    ours = terminal_features(sample)
    by_terminal = {c: g for c, g in sample.groupby("terminal_id", sort=False)}
    rng = np.random.default_rng(2)
    runs = 0
    for i in rng.choice(len(sample), size=600, replace=False):
        row = sample.iloc[i]
        txs = by_terminal[row["terminal_id"]]  # already in time, then arrival, order
        known = txs[txs["timestamp"] <= row["timestamp"] - pd.Timedelta(days=7)]
        got = ours.loc[sample.index[i]]
        if known.empty or known["is_fraud"].iloc[-1] == 0:
            assert got["terminal_last_known_fraud"] == (
                0 if known.empty else known["is_fraud"].iloc[-1]
            )
            assert got["terminal_fraud_run_len"] == 0 and np.isnan(got["terminal_fraud_run_age_d"])
            continue
        labels = known["is_fraud"].to_numpy()
        genuine = np.flatnonzero(labels == 0)
        first = genuine[-1] + 1 if len(genuine) else 0
        assert got["terminal_last_known_fraud"] == 1
        assert got["terminal_fraud_run_len"] == len(labels) - first
        age = (row["timestamp"] - known["timestamp"].iloc[first]) / pd.Timedelta(days=1)
        assert abs(got["terminal_fraud_run_age_d"] - age) <= 1e-9
        runs += 1
    assert runs > 5


def test_terminal_windows_match_pandas(sample: pd.DataFrame) -> None:
    ours = terminal_features(sample)
    ref = handbook_terminal(sample)
    assert ref["terminal_nb_tx_30d"].max() > 0 and ref["terminal_risk_30d"].max() > 0
    for column in ref.columns:
        np.testing.assert_allclose(
            ours[column].to_numpy(), ref[column].to_numpy(), rtol=0, atol=1e-9
        )


def test_daily_snapshot_equals_handbook_at_day_start(sample: pd.DataFrame) -> None:
    """A snapshot is the handbook definition evaluated at 00:00 UTC of its day (brute force)."""
    days = pd.date_range("2018-05-01", periods=5, freq="D", tz="UTC")
    snaps = terminal_snapshots(sample, days)
    assert len(snaps) == sample["terminal_id"].nunique() * len(days)
    rng = np.random.default_rng(0)
    checked = 0
    for i in rng.choice(len(snaps), size=300, replace=False):
        row = snaps.iloc[i]
        txs = sample[sample["terminal_id"] == row["terminal_id"]]
        for w in (1, 7, 30):
            lo = row["event_timestamp"] - pd.Timedelta(days=7 + w)
            hi = row["event_timestamp"] - pd.Timedelta(days=7)
            window = txs[(txs["timestamp"] > lo) & (txs["timestamp"] <= hi)]
            assert row[f"terminal_nb_tx_{w}d"] == len(window)
            risk = window["is_fraud"].mean() if len(window) else 0.0
            assert abs(row[f"terminal_risk_{w}d"] - risk) <= 1e-12
            checked += len(window)
    assert checked > 1000


def test_request_features_take_the_means_that_are_served(sample: pd.DataFrame) -> None:
    """A model that reads one ratio gets its served mean only (training's ``_align``)."""
    customers = customer_features(sample)
    every = request_features(sample["timestamp"], sample["amount"], customers)
    one = request_features(
        sample["timestamp"], sample["amount"], customers[["customer_prev_avg_amount_60d"]]
    )
    assert [c for c in one.columns if c.startswith("amount_to")] == ["amount_to_prev_avg_60d"]
    pd.testing.assert_series_equal(one["amount_to_prev_avg_60d"], every["amount_to_prev_avg_60d"])
    assert not [
        c
        for c in request_features(sample["timestamp"], sample["amount"]).columns
        if c.startswith("amount_to")
    ]
