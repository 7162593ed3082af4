"""The stream's incremental path equals the batch backfill, whatever the micro-batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.features import (
    CUSTOMER_HISTORY_MS,
    HISTORY_COLUMNS,
    customer_features,
    prune_history,
    to_ms,
    update_customer_features,
)
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return validate_frame(
        simulate(customers=120, terminals=240, days=50, seed=2), keep=("is_fraud",)
    )


def replay(events: pd.DataFrame, cuts: list[int]) -> tuple[pd.DataFrame, int]:
    """Feed ``events`` through the incremental path in batches ending at ``cuts``."""
    history = pd.DataFrame(columns=HISTORY_COLUMNS).astype(
        {"customer_id": "string[pyarrow]", "timestamp": "datetime64[ns, UTC]", "amount": "float64"}
    )
    parts, largest = [], 0
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=True):
        batch = events.iloc[lo:hi]
        if batch.empty:
            continue
        features, history = update_customer_features(history, batch)
        parts.append(features)
        largest = max(largest, len(history))
    return pd.concat(parts), largest


def timestamp_cuts(events: pd.DataFrame, raw: list[int]) -> list[int]:
    """Batch ends moved off equal timestamps (a tie split across batches cannot see ahead)."""
    t = events["timestamp"].to_numpy()
    out = []
    for c in sorted(set(raw)):
        while 0 < c < len(t) and t[c] == t[c - 1]:
            c += 1
        out.append(c)
    return sorted(set(out))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12000), min_size=1, max_size=60))
def test_any_batching_equals_the_backfill(events: pd.DataFrame, raw_cuts: list[int]) -> None:
    cuts = timestamp_cuts(events, [c % len(events) for c in raw_cuts])
    streamed, _ = replay(events, cuts)
    batch = customer_features(events)
    np.testing.assert_allclose(streamed.to_numpy(float), batch.to_numpy(float), rtol=0, atol=1e-9)


def test_history_stays_bounded() -> None:
    """After 200 days of events, the state holds each customer's last 120 days, no more."""
    long = validate_frame(
        simulate(customers=40, terminals=80, days=200, seed=4), keep=("is_fraud",)
    )
    cuts = list(range(300, len(long), 300))
    streamed, largest = replay(long, cuts)
    np.testing.assert_allclose(
        streamed.to_numpy(float), customer_features(long).to_numpy(float), rtol=0, atol=1e-9
    )
    ms = to_ms(long["timestamp"])
    latest = pd.Series(ms).groupby(long["customer_id"].to_numpy()).transform("max").to_numpy()
    needed = int((ms > latest - CUSTOMER_HISTORY_MS).sum())
    assert largest <= needed + 300  # never more than the window plus one batch
    assert largest < 0.75 * len(long)


def test_prune_keeps_exactly_the_window() -> None:
    t0 = pd.Timestamp("2026-06-30T00:00:00Z")
    span = pd.Timedelta(milliseconds=CUSTOMER_HISTORY_MS)
    history = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b"],
            "timestamp": [t0 - span, t0 - span + pd.Timedelta(seconds=1), t0, t0 - 2 * span],
            "amount": [1.0, 2.0, 3.0, 4.0],
        }
    )
    kept = prune_history(history)
    assert kept["amount"].tolist() == [2.0, 3.0, 4.0]  # b's only row is its latest
