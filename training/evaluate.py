"""Evaluation as fraud teams do it: the handbook split, AUC ROC, Average Precision, CP@k.

The definitions follow *Reproducible Machine Learning for Credit Card Fraud Detection*
(Le Borgne et al.): day indices are UTC calendar days, the test set leaves out cards
already known as compromised, and Card Precision@k ranks cards (not transactions) per
day, leaving out cards caught on an earlier test day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from fraudstream.schema import LABEL_COLUMN


@dataclass(frozen=True)
class Split:
    """A train / delay / test layout in UTC days."""

    train_start: date
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    @property
    def test_start(self) -> date:
        return self.train_start + timedelta(days=self.train_days + self.delay_days)

    def bounds(self) -> dict[str, pd.Timestamp]:
        start = pd.Timestamp(self.train_start, tz="UTC")
        return {
            "train_start": start,
            "train_end": start + pd.Timedelta(days=self.train_days),
            "test_start": start + pd.Timedelta(days=self.train_days + self.delay_days),
            "test_end": start
            + pd.Timedelta(days=self.train_days + self.delay_days + self.test_days),
        }


def day_index(timestamps: pd.Series, origin: datetime | pd.Timestamp) -> np.ndarray:
    """Whole UTC days since ``origin``'s midnight (the handbook's ``TX_TIME_DAYS``)."""
    start = pd.Timestamp(origin).tz_convert("UTC").normalize()
    delta = pd.DatetimeIndex(timestamps).tz_convert("UTC") - start
    return np.asarray(delta.days, dtype=np.int64)


def train_test_split(df: pd.DataFrame, split: Split) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The handbook's split: the test set without cards already known as compromised.

    Known compromised: every customer with a fraud in the training week, and for test day
    ``i`` also every customer with a fraud on training day ``first + train_days + i - 1``,
    accumulated over the test days.
    """
    b = split.bounds()
    days = day_index(df["timestamp"], b["train_start"])
    train = df[(days >= 0) & (days < split.train_days)]
    labels = df[LABEL_COLUMN].to_numpy()
    known = set(train.loc[train[LABEL_COLUMN] == 1, "customer_id"])
    parts = []
    first_test = split.train_days + split.delay_days
    for i in range(split.test_days):
        revealed_day = split.train_days + i - 1
        known |= set(df.loc[(days == revealed_day) & (labels == 1), "customer_id"])
        day = df[days == first_test + i]
        parts.append(day[~day["customer_id"].isin(known)])
    return train, pd.concat(parts) if parts else df.iloc[:0]


def auc_roc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties get the average rank)."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(score, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (R_n - R_{n-1}) * P_n."""
    y = np.asarray(y).astype(np.float64)
    total = y.sum()
    if total == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s, yy = np.asarray(score)[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(yy)[last_of_tie]
    seen = last_of_tie + 1
    precision = tp / seen
    recall = tp / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def card_precision_at_k(
    df: pd.DataFrame, score: np.ndarray, k: int = 100, origin: datetime | pd.Timestamp | None = None
) -> tuple[float, list[float]]:
    """Mean over days of the fraud share among the ``k`` highest-scored cards of the day.

    Per day and customer: max score and max label. Cards counted as caught on an earlier
    day are left out of later days. Returns the mean and the per-day values.
    """
    frame = pd.DataFrame(
        {
            "customer_id": df["customer_id"].to_numpy(),
            "label": df[LABEL_COLUMN].to_numpy(),
            "score": np.asarray(score, dtype=np.float64),
            "day": day_index(df["timestamp"], origin or df["timestamp"].min()),
        }
    )
    caught: set[object] = set()
    per_day = []
    for _, day in frame.groupby("day", sort=True):
        day = day[~day["customer_id"].isin(caught)]
        cards = day.groupby("customer_id")[["score", "label"]].max()
        top = cards.sort_values("score", ascending=False, kind="mergesort").head(k)
        hits = top.index[top["label"] == 1]
        per_day.append(len(hits) / k)
        caught.update(hits)
    return (float(np.mean(per_day)) if per_day else float("nan")), per_day


def evaluate(df: pd.DataFrame, score: np.ndarray, k: int = 100) -> dict[str, float]:
    """AUC ROC, AP and CP@k of ``score`` on ``df`` (with ``customer_id``, label, timestamp)."""
    y = df[LABEL_COLUMN].to_numpy()
    cp, _ = card_precision_at_k(df, score, k)
    return {
        "auc_roc": auc_roc(y, score),
        "average_precision": average_precision(y, score),
        f"card_precision_at_{k}": cp,
        "n": len(df),
        "n_fraud": int(y.sum()),
    }
