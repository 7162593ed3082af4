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


def test_history_stays_bounded(events: pd.DataFrame) -> None:
    cuts = list(range(500, len(events), 500))
    _, largest = replay(events, cuts)
    per_customer_30d = (
        customer_features(events)["customer_nb_tx_30d"].groupby(events["customer_id"]).max()
    )
    assert largest <= per_customer_30d.sum() + 500
    assert largest < 0.75 * len(events)  # 50 days of data, 30 days of history kept


def test_prune_keeps_exactly_the_window() -> None:
    t0 = pd.Timestamp("2026-01-31T00:00:00Z")
    history = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b"],
            "timestamp": [
                t0 - pd.Timedelta(days=30),
                t0 - pd.Timedelta(days=29, hours=23),
                t0,
                t0 - pd.Timedelta(days=40),
            ],
            "amount": [1.0, 2.0, 3.0, 4.0],
        }
    )
    kept = prune_history(history)
    assert kept["amount"].tolist() == [2.0, 3.0, 4.0]  # b's only row is its latest
    assert (to_ms(kept["timestamp"]) > to_ms(pd.Series([t0]))[0] - CUSTOMER_HISTORY_MS).sum() == 2
