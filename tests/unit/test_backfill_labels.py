"""The terminal backfill with the labels' report times: a fraud reported after the label
delay counts only at transactions after its report (the labels known at each one's time)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudstream.features import LABEL_DELAY_DAYS, TERMINAL_FEATURES, terminal_features
from training.backfill import REPORTED_AT, terminal_table

pytestmark = pytest.mark.unit

NAMES = [f.name for f in TERMINAL_FEATURES]


def _events(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 400
    start = pd.Timestamp("2026-01-01", tz="UTC")
    times = start + pd.to_timedelta(np.sort(rng.uniform(0, 60, n)), unit="D")
    fraud = (rng.random(n) < 0.2).astype("int8")
    delay = pd.to_timedelta(rng.choice([1, 7, 12, 25], n) + rng.uniform(0, 1, n), unit="D")
    reported = pd.Series(times + delay).where(rng.random(n) < 0.9)  # some unknown: NaT
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "timestamp": times,
            "customer_id": "c",
            "terminal_id": rng.choice(["a", "b", "c", "d"], n),
            "amount": 10.0,
            "is_fraud": fraud,
            REPORTED_AT: reported.to_numpy(),
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_row_uses_the_labels_known_at_its_time(seed: int) -> None:
    events = _events(seed)
    got = terminal_table(events).reset_index(drop=True)
    delay = pd.Timedelta(days=LABEL_DELAY_DAYS)
    reported = pd.to_datetime(events[REPORTED_AT], utc=True)
    on_time = ~(reported > events["timestamp"] + delay)  # no report time: the handbook's rule
    for i in range(len(events)):  # brute force: each row with the labels known at its time
        known = events["is_fraud"].where(on_time | (reported <= events["timestamp"].iloc[i]), 0)
        want = terminal_features(events.assign(is_fraud=known)).iloc[i]
        np.testing.assert_allclose(
            got.loc[i, NAMES].to_numpy(float),
            want[NAMES].to_numpy(float),
            rtol=0,
            atol=1e-12,
            equal_nan=True,
            err_msg=str(i),
        )
    handbook = terminal_table(events.drop(columns=[REPORTED_AT])).reset_index(drop=True)
    assert not np.allclose(  # the late labels changed some rows
        handbook[NAMES].to_numpy(float), got[NAMES].to_numpy(float), equal_nan=True
    )


def test_labels_reported_within_the_delay_give_the_handbook_s_values() -> None:
    events = _events(3)
    events[REPORTED_AT] = events["timestamp"] + pd.Timedelta(days=LABEL_DELAY_DAYS)
    pd.testing.assert_frame_equal(
        terminal_table(events), terminal_table(events.drop(columns=[REPORTED_AT]))
    )
