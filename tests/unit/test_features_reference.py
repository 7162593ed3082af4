"""The backfill against an independent, plain pandas implementation of the handbook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudstream.features import customer_features, terminal_daily_snapshots, terminal_features
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
    snaps = terminal_daily_snapshots(sample, days)
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
